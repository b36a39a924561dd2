"""History retention at a million rows: its time, and `GET /tasks?limit=50` before and after, beside a plain DELETE.

    .venv/bin/python -m bench.history                 # 1,000,000 rows, a readable table
    .venv/bin/python -m bench.history --rows 100000 --json

One run makes its own MariaDB database (`bt_hist_<random>`, migrated, dropped at the end) and fills
it server-side (MariaDB's sequence engine): half the rows are tasks, four tenths eventlog entries,
one tenth notifications, created evenly over the last 400 days, so about half of each table is past
the default retention (tasks and notifications 180 days, eventlog 365 days). A few old tasks are not
final or are named by a backup, and some old events are pointed at by alerts: they must stay.

Measured in the same run:
* `GET /tasks?limit=50` (`frontdoor.queries.list_tasks`), median of 7, before and after;
* `hosting.events.history.prune` (batches of 5,000 rows, one transaction each);
* the baseline: the same rows deleted by one plain `DELETE ... WHERE created_at < x` per table, on
  copies of the three tables made before the prune (one transaction each, no reference checks).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
import uuid
from typing import Any

from sqlalchemy import Engine, create_engine, text

from frontdoor import queries
from hosting.events import history
from models.migrate import upgrade

ADMIN = "mysql+pymysql://root@127.0.0.1:3306"


def _fill(engine: Engine, rows: int) -> dict[str, int]:
    tasks, events = rows // 2, rows * 4 // 10
    notes = rows - tasks - events
    fill = {
        "tasks": f"""INSERT INTO tasks (id, type, queue, args, app_id, state, percent, message, locks, created_at,
                        finished_at)
            SELECT CONCAT('b-', seq), 'apptask', 'apptask', '{{"operation": "restart"}}', CONCAT('app', seq % 50),
                   CASE WHEN seq % 10007 = 0 THEN 'running' ELSE 'succeeded' END, 100, 'Done', '{{}}',
                   UTC_TIMESTAMP(6) - INTERVAL (seq * 400 * 86400 DIV {tasks}) SECOND,
                   UTC_TIMESTAMP(6) - INTERVAL (seq * 400 * 86400 DIV {tasks}) SECOND
            FROM seq_1_to_{tasks}""",
        "eventlog": f"""INSERT INTO eventlog (id, action, source, data, created_at)
            SELECT seq, 'app.restart', '{{}}', '{{"x": 1}}',
                   UTC_TIMESTAMP(6) - INTERVAL ((({events} - seq) * 400 * 86400) DIV {events}) SECOND
            FROM seq_1_to_{events}""",
        "notifications": f"""INSERT INTO notifications (event_id, alert_kind, title, message, acknowledged,
                        created_at)
            SELECT seq * {max(1, events // notes)},
                   CASE WHEN seq <= 3 THEN CONCAT('bench_alert_', seq) ELSE NULL END, 'news', '', 0,
                   UTC_TIMESTAMP(6) - INTERVAL ((({notes} - seq) * 400 * 86400) DIV {notes}) SECOND
            FROM seq_1_to_{notes}""",
    }
    with engine.begin() as conn:
        for sql in fill.values():
            conn.execute(text(sql))
        # An old task a backup names stays, as do the alerts' events.
        conn.execute(
            text(
                "INSERT INTO backups (id, path, type, app_id, version, state, format, depends_on, task_id) "
                "VALUES ('app_bench_1', 'x', 'app', 'app1', '1', 'normal', 'tgz', '[]', :t)"
            ),
            {"t": f"b-{tasks - 1}"},
        )
    return {"tasks": tasks, "eventlog": events, "notifications": notes}


def _list_ms(engine: Engine) -> float:
    times = []
    for _ in range(7):
        started = time.perf_counter()
        assert len(queries.list_tasks(engine, limit=50)) == 50
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def _counts(engine: Engine, suffix: str = "") -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t: int(conn.execute(text(f"SELECT COUNT(*) FROM {t}{suffix}")).scalar_one())
            for t in ("tasks", "eventlog", "notifications")
        }


def _copy(engine: Engine) -> None:
    with engine.begin() as conn:
        for t in ("tasks", "eventlog", "notifications"):
            conn.execute(text(f"CREATE TABLE {t}_copy LIKE {t}"))
            conn.execute(text(f"INSERT INTO {t}_copy SELECT * FROM {t}"))


def _plain_delete(engine: Engine, retention: history.Retention) -> dict[str, float]:
    days = {
        "tasks": retention.tasks_days,
        "notifications": retention.notifications_days,
        "eventlog": retention.eventlog_days,
    }
    took = {}
    for table, keep in days.items():
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(
                text(f"DELETE FROM {table}_copy WHERE created_at < UTC_TIMESTAMP(6) - INTERVAL :d DAY"), {"d": keep}
            )
        took[table] = round(time.perf_counter() - started, 3)
    return took


def run(rows: int) -> dict[str, Any]:
    name = f"bt_hist_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    url = f"{ADMIN}/{name}"
    engine = create_engine(url)
    try:
        upgrade(url)
        started = time.perf_counter()
        filled = _fill(engine, rows)
        fill_s = round(time.perf_counter() - started, 1)
        _copy(engine)
        with engine.begin() as conn:
            for t in ("tasks", "eventlog", "notifications", "tasks_copy", "eventlog_copy", "notifications_copy"):
                conn.execute(text(f"ANALYZE TABLE {t}"))
        before = _counts(engine)
        list_before = _list_ms(engine)
        retention = history.Retention(180, 365, 180, 5000)
        started = time.perf_counter()
        pruned = history.prune(engine, retention)
        prune_s = round(time.perf_counter() - started, 3)
        list_after = _list_ms(engine)
        baseline = _plain_delete(engine, retention)
        return {
            "rows": sum(filled.values()),
            "filled": filled,
            "fill_seconds": fill_s,
            "before": before,
            "after": _counts(engine),
            "plain_delete_left": _counts(engine, "_copy"),
            "prune": pruned.as_dict(),
            "prune_seconds": prune_s,
            "plain_delete_seconds": baseline,
            "plain_delete_total_seconds": round(sum(baseline.values()), 3),
            "list_tasks_ms_before": list_before,
            "list_tasks_ms_after": list_after,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows over the three tables (default 1,000,000)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    figures = run(args.rows)
    if args.json:
        sys.stdout.write(json.dumps(figures) + "\n")
        return 0
    out = sys.stdout.write
    out(f"rows: {figures['rows']:,} {figures['filled']} (filled in {figures['fill_seconds']} s)\n")
    out(f"{'table':<14} {'before':>10} {'after prune':>12} {'after plain DELETE':>19}\n")
    for t in ("tasks", "eventlog", "notifications"):
        out(f"{t:<14} {figures['before'][t]:>10,} {figures['after'][t]:>12,} {figures['plain_delete_left'][t]:>19,}\n")
    p = figures["prune"]
    out(f"prune: {figures['prune_seconds']} s in {p['batches']} batches {p['seconds']}\n")
    plain, listed = figures["plain_delete_seconds"], (figures["list_tasks_ms_before"], figures["list_tasks_ms_after"])
    out(f"plain DELETE (one statement per table): {figures['plain_delete_total_seconds']} s {plain}\n")
    out(f"GET /tasks?limit=50: {listed[0]} ms before, {listed[1]} ms after\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
