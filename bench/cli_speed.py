"""How long the `boxtasks` CLI takes to answer, beside `python -c pass` measured in the same run.

    .venv/bin/python -m bench.cli_speed                  # readable table, each figure beside its target
    .venv/bin/python -m bench.cli_speed --json           # one JSON object on stdout
    .venv/bin/python -m bench.cli_speed --database-url mysql+pymysql://root@127.0.0.1:3306

Each figure is the wall time of a fresh process, from spawn to exit, stdout to /dev/null:
`boxtasks --help`, `boxtasks task list` (50 of 200 tasks) and `boxtasks locks` (a few holders and
one waiter), and, as the baseline, `python -c pass` with the same interpreter; beside them
`import sqla+pydantic`, a Python that imports SQLAlchemy's ORM, pydantic and pydantic-settings
and nothing else (no collection while importing, none at exit, as `cli.main` does): what reading
tasks costs before any line of boxtasks runs. The commands run
against a database the script makes: SQLite in a temporary directory by default, or with
`--database-url` a fresh database on that MariaDB/MySQL or PostgreSQL server (`bt_bench_<random>`,
migrated, dropped at the end). Rounds run every command once each, in an order that rotates; a
warm-up round first fills the page cache. The figure is the median over the rounds; `over python`
is that median minus the baseline's, what the CLI itself adds; `cpu ms` the median user + system
time of the process, which a loaded machine inflates less than the wall time (the targets are wall).

Exit status: 0 when every command exited 0 (targets missed are printed MISSED, not failed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent
TASKS = 200

#: The libraries alone, the collector handled as `cli.main` handles it (off while importing, frozen at exit).
_FLOOR = "import gc; gc.disable(); import sqlalchemy.orm, pydantic, pydantic_settings; gc.freeze()"

#: Name, argv, target in ms (issue #19: "<= 150 / 300 / 300 ms on these machines", where
#: `python -c pass` took 26 ms). `None`: the baseline.
COMMANDS: list[tuple[str, list[str], float | None]] = [
    ("python -c pass", [sys.executable, "-c", "pass"], None),
    # The libraries `task list` cannot do without, imported and nothing else: the floor under it.
    ("import sqla+pydantic", [sys.executable, "-c", _FLOOR], None),
    ("boxtasks --help", [str(VENV_BIN / "boxtasks"), "--help"], 150.0),
    ("boxtasks task list", [str(VENV_BIN / "boxtasks"), "task", "list"], 300.0),
    ("boxtasks locks", [str(VENV_BIN / "boxtasks"), "locks"], 300.0),
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def bench_database(server_url: str | None, scratch: Path) -> Iterator[str]:
    """A migrated database: SQLite under `scratch`, or a fresh one on the server at `server_url`."""
    if server_url is None:
        from models.migrate import upgrade

        url = f"sqlite:///{scratch / 'boxtasks.db'}"
        upgrade(url)
        yield url
        return
    from bench.taskrig import bench_database as server_database

    with server_database(server_url) as url:
        yield url


def fill(url: str, scratch: Path) -> None:
    """200 tasks in several states; three lock holders (heartbeat stamped) and one waiter."""
    os.environ.update(cli_environment(url, scratch))
    from config import get_settings

    get_settings.cache_clear()
    from sqlalchemy import update

    from lockman import LockManager
    from models import Task, TaskState, make_engine, records

    engine = make_engine(url)
    states = [TaskState.SUCCEEDED, TaskState.FAILED, TaskState.RUNNING, TaskState.QUEUED]
    owners: list[str] = []
    try:
        for i in range(TASKS):
            app_id = f"app{i % 20}"
            task_id = records.create(
                engine, kind="apptask", queue="apptask", args={"operation": "backup", "app_id": app_id}, app_id=app_id
            )
            state = TaskState.RUNNING if i >= TASKS - 4 else states[i % len(states)]
            with engine.begin() as conn:
                conn.execute(
                    update(Task).where(Task.id == task_id).values(state=state.value, percent=i % 101, message="bench")
                )
            if i >= TASKS - 4:
                owners.append(task_id)
    finally:
        engine.dispose()
    manager = LockManager.from_settings()
    try:
        manager.ensure_row()
        for owner in owners:
            manager.heartbeat(owner)
        for n, owner in enumerate(owners[:3]):
            manager.try_acquire(owner, {"platform": "S", f"app:app{n}": "X"}, label="apptask:backup")
        manager.try_acquire(owners[3], {"platform": "S", "app:app0": "X"}, label="apptask:backup")
    finally:
        manager.dispose()


def cli_environment(url: str, scratch: Path) -> dict[str, str]:
    """The settings of every process of the run; the lease outlasts it, so the holders stay alive."""
    return {"BOXTASKS_DATABASE_URL": url, "BOXTASKS_DATA_DIR": str(scratch), "BOXTASKS_LOCK_LEASE_SECONDS": "3600"}


def run_once(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of `argv`, in ms; a non-zero exit raises."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    wall = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-2:])} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return wall, cpu


def measure(runs: int, env: dict[str, str]) -> dict[str, list[tuple[float, float]]]:
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in COMMANDS}
    for _, argv, _ in COMMANDS:  # warm-up: page cache, .pyc files
        run_once(argv, env)
    for r in range(runs):
        order = COMMANDS[r % len(COMMANDS) :] + COMMANDS[: r % len(COMMANDS)]
        for name, argv, _ in order:
            times[name].append(run_once(argv, env))
    return times


def report(times: dict[str, list[tuple[float, float]]], *, database: str, runs: int) -> dict[str, Any]:
    baseline = statistics.median(wall for wall, _ in times[COMMANDS[0][0]])
    figures = []
    for name, _, target in COMMANDS:
        walls = [wall for wall, _ in times[name]]
        median = statistics.median(walls)
        figures.append(
            {
                "command": name,
                "median_ms": round(median, 1),
                "min_ms": round(min(walls), 1),
                "max_ms": round(max(walls), 1),
                "cpu_ms": round(statistics.median(cpu for _, cpu in times[name]), 1),
                "over_python_ms": round(median - baseline, 1),
                "target_ms": target,
                "met": None if target is None else median <= target,
            }
        )
    return {
        "bench": "cli_speed",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}",
        "load_average": os.getloadavg()[0],
        "database": database,
        "runs": runs,
        "figures": figures,
    }


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{result['date']}; {result['machine']}; database {result['database']}; "
        f"median of {result['runs']} runs; load average (1 min) {result['load_average']:.1f}"
    )
    print(f"{'command':<20} {'median ms':>10} {'min':>8} {'max':>8} {'cpu ms':>8} {'over python':>12}  target")
    for f in result["figures"]:
        target = "reference" if f["target_ms"] is None else f"<= {f['target_ms']:g} {'ok' if f['met'] else 'MISSED'}"
        print(
            f"{f['command']:<20} {f['median_ms']:>10.1f} {f['min_ms']:>8.1f} {f['max_ms']:>8.1f} {f['cpu_ms']:>8.1f} "
            f"{f['over_python_ms']:>12.1f}  {target}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15, help="timed runs of each command (default 15)")
    parser.add_argument("--quick", action="store_true", help="3 runs: a smoke test")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--database-url", help="server to make the bench database on (default: SQLite in a temp dir)")
    parser.add_argument("--broker-url", help="not used (the commands measured send no message); taken for the harness")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else max(1, args.runs)
    with tempfile.TemporaryDirectory(prefix="bt_clibench_") as tmp:
        scratch = Path(tmp)
        with bench_database(args.database_url, scratch) as url:
            fill(url, scratch)
            env = {k: v for k, v in os.environ.items() if not k.startswith("BOXTASKS_")}
            env.update(cli_environment(url, scratch))
            backend = url.split(":", 1)[0]
            log(f"measuring {len(COMMANDS)} commands, {runs} runs each, on {backend}")
            try:
                times = measure(runs, env)
            except RuntimeError as err:
                log(f"error: {err}")
                return 1
    result = report(times, database=backend, runs=runs)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
