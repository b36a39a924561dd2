"""App backup with a MySQL database: boxtasks beside mysqldump + tar done by hand, and the worker's memory.

    .venv/bin/python -m bench.app_backup                 # 200 MB of MySQL + 200 MB of files, and a quarter of that
    .venv/bin/python -m bench.app_backup --mb 20 --json  # smaller; one JSON object on stdout

One run makes its own platform database on the server (`bt_bench_<random>`, migrated, dropped at the
end) and, for each size, one app with the `mysql` addon on the same server (its own database and user,
made by `hosting.apps.databases` as install makes them, dropped at the end), filled through the app's
own credentials with about `--mb` MB of rows (a mysqldump of that size: numbers, hex digests and
repeated words, which gzip halves) and `--mb` MB of files in its data directory (half random bytes,
half text).

Measured in the same run, alternating which goes first, after one read of every file (a warm cache
for both):

- boxtasks: `create_app_backup` in a fresh Python process (`--child`, timed inside it, around the
  call: a worker is already running when a backup starts). That is mysqldump to a file, tar + gzip
  (level 6) of the data and the dump into one archive with its sha256, fsync, and the read-back of
  the whole archive (checksum, gzip CRC, every member) before the rename. Its peak RSS is
  `getrusage(RUSAGE_SELF).ru_maxrss` of that process (mysqldump, its child, not counted), beside
  its RSS just before the call: flat across the two sizes means it streams.
- by hand: `mysqldump --single-transaction --routines --triggers --events --hex-blob DB > f &&
  tar czf out.tar.gz data f` under bash, timed around the whole command (no checksum, no read-back).

Target: boxtasks at >= 0.8x the speed of the hand-made pair (its time <= 1.25x theirs); the peak RSS
of the larger size within 32 MB of the smaller's. Exit 1 on an error, 0 otherwise (a missed target is
printed MISSED).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

DEFAULT_DATABASE = os.environ.get("BOXTASKS_BENCH_DATABASE_URL", "mysql+pymysql://root@127.0.0.1:3306")
MB = 1_000_000
TARGET_SPEED = 0.8
FLAT_KIB = 32 * 1024
_ROW_BYTES = 500  # about what one generated row takes in the dump


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _manifest() -> dict[str, Any]:
    return {
        "id": "io.boxtasks.benchapp",
        "version": "1.0.0",
        "image": "boxtasks-bench/none:1",
        "httpPort": 8000,
        "addons": {"localstorage": {}, "mysql": {}},
    }


def _settings(workdir: Path, url: str, server: str) -> Any:
    from config import load_settings

    return load_settings(data_dir=workdir, database_url=url, mysql_addon_url=server)


# ---------------------------------------------------------------------------- making the app


def make_app(url: str, server: str, workdir: Path, mb: int) -> dict[str, Any]:
    """An app row with its MySQL database (rows through its own credentials) and its data directory."""
    from hosting.apps import addons, databases
    from hosting.apps.manifest import parse_manifest
    from hosting.box import Box
    from models import App

    settings = _settings(workdir, url, server)
    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(
            insert(App).values(
                id=app_id,
                app_store_id="io.boxtasks.benchapp",
                manifest=_manifest(),
                version="1.0.0",
                location=app_id,
                installation_state="installed",
                run_state="running",
                env={},
            )
        )
        databases.set_up(conn, app_id=app_id, manifest=parse_manifest(_manifest()), settings=settings)
    with engine.connect() as conn:
        configs = addons.stored(conn, app_id)
    engine.dispose()
    databases.provision(settings, configs)
    creds = configs["mysql"]
    started = time.perf_counter()
    _fill_mysql(server, creds, mb)
    data = Box.from_settings(settings).app_dir(app_id) / "data"
    _fill_files(data, mb)
    log(f"  app {app_id}: {mb} MB of rows and {mb} MB of files made in {time.perf_counter() - started:.1f}s")
    return {"app_id": app_id, "database": creds["database"], "data": str(data), "configs": configs}


def _fill_mysql(server: str, creds: dict[str, Any], mb: int) -> None:
    """`mb` MB of dump: rows made by the server from a cross join, as the app's own user."""
    url = make_url(server).set(
        username=creds["username"], password=creds["password"], database=creds["database"], drivername="mysql+pymysql"
    )
    engine = create_engine(url, poolclass=NullPool)
    rows = max(1000, mb * MB // _ROW_BYTES)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE digits (i INT PRIMARY KEY)"))
        conn.execute(text("INSERT INTO digits VALUES " + ",".join(f"({i})" for i in range(1000))))
        conn.execute(
            text(
                "CREATE TABLE events (id BIGINT PRIMARY KEY AUTO_INCREMENT, k CHAR(64), n DOUBLE,"
                " body TEXT, at DATETIME(6)) ENGINE=InnoDB"
            )
        )
    done = 0
    while done < rows:
        batch = min(200_000, rows - done)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO events (k, n, body, at) SELECT SHA2(CONCAT(a.i, '-', b.i, :s), 256), RAND() * 1e6,"
                    " CONCAT_WS(' ', 'event', a.i, b.i, 'by user', FLOOR(RAND() * 5000), MD5(RAND()), 'status ok',"
                    " REPEAT('lorem ipsum dolor sit amet ', 1 + a.i % 9), SHA2(RAND(), 512), TO_BASE64(MD5(b.i))),"
                    " NOW(6) - INTERVAL a.i * 1000 + b.i SECOND FROM digits a CROSS JOIN digits b LIMIT :n"
                ),
                {"s": done, "n": batch},
            )
        done += batch
    engine.dispose()


def _fill_files(data: Path, mb: int) -> None:
    """`mb` MB in 1 MB files: half random bytes, half text lines (what apps keep: media and documents)."""
    data.mkdir(parents=True, exist_ok=True)
    text_chunk = b"".join(f"line {i}: {uuid.uuid4().hex} lorem ipsum dolor sit amet\n".encode() for i in range(16_000))
    for i in range(mb):
        sub = data / f"dir{i // 50:03d}"
        sub.mkdir(exist_ok=True)
        body = os.urandom(MB) if i % 2 == 0 else text_chunk[:MB]
        (sub / f"file{i:05d}.bin").write_bytes(body)


def _warm(data: str) -> None:
    for path in Path(data).rglob("*"):
        if path.is_file():
            with path.open("rb") as f:
                while f.read(1 << 20):
                    pass


# ---------------------------------------------------------------------------- the two ways


def by_hand(server: str, app: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """mysqldump > f && tar czf, the standard tools under bash; timed around the whole command."""
    out = workdir / f"hand-{uuid.uuid4().hex[:6]}"
    out.mkdir()
    admin = make_url(server)
    cnf = out / "client.cnf"
    cnf.write_text(
        f"[client]\nhost={admin.host or '127.0.0.1'}\nport={admin.port or 3306}\nuser={admin.username or 'root'}\n"
        + (f'password="{admin.password}"\n' if admin.password else "")
    )
    cnf.chmod(0o600)
    data = Path(app["data"])
    command = (
        f"mysqldump --defaults-extra-file={cnf} --single-transaction --routines --triggers --events --hex-blob"
        f" {app['database']} > {out}/mysql.sql && tar czf {out}/backup.tar.gz -C {data.parent} data -C {out} mysql.sql"
    )
    started = time.perf_counter()
    subprocess.run(["bash", "-c", command], check=True)
    seconds = time.perf_counter() - started
    result = {
        "seconds": seconds,
        "dump_bytes": (out / "mysql.sql").stat().st_size,
        "archive_bytes": (out / "backup.tar.gz").stat().st_size,
    }
    shutil.rmtree(out)
    return result


def ours(url: str, server: str, app: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """`create_app_backup` in a fresh process: its time and peak RSS as it reports them."""
    spec = json.dumps({"url": url, "server": server, "app_id": app["app_id"], "workdir": str(workdir)})
    proc = subprocess.run(
        [sys.executable, "-m", "bench.app_backup", "--child", spec], check=True, capture_output=True, text=True
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """The backing-up process: one app backup under a real lock grant, then its own rusage."""
    from hosting import LocalContext
    from hosting.backups import fileformat
    from hosting.backups.appbackup import create_app_backup
    from hosting.backups.store import file_of
    from hosting.box import Box
    from lockman import LockManager
    from models import Task, db_utcnow

    settings = _settings(Path(spec["workdir"]), spec["url"], spec["server"])
    box = Box.from_settings(settings)
    owner = uuid.uuid4().hex
    engine = create_engine(spec["url"], poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(
            insert(Task).values(
                id=owner,
                type="bench",
                args={},
                state="running",
                percent=0,
                message="",
                locks={},
                heartbeat_at=db_utcnow(),
            )
        )
    engine.dispose()
    manager = LockManager(spec["url"], row_id="bench-app-backup", lease=600.0)
    manager.ensure_row()
    grant = manager.acquire(owner, {"platform": "S", f"app:{spec['app_id']}": "X"}, timeout=60)
    try:
        ctx = LocalContext(manager, grant)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        record = create_app_backup(ctx, box, spec["app_id"])
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        manager.release(owner)
        manager.dispose()
    fileformat.remove(file_of(settings, record.path))
    return {"seconds": seconds, "archive_bytes": record.size, "rss_before_kib": rss_before, "peak_rss_kib": peak}


# ---------------------------------------------------------------------------- the run


def measure(url: str, server: str, workdir: Path, mb: int, rounds: int) -> dict[str, Any]:
    log(f"size {mb} MB + {mb} MB:")
    app = make_app(url, server, workdir, mb)
    try:
        _warm(app["data"])
        hand: list[dict[str, Any]] = []
        mine: list[dict[str, Any]] = []
        for r in range(rounds):
            for name in ("hand", "boxtasks") if r % 2 == 0 else ("boxtasks", "hand"):
                if name == "hand":
                    hand.append(by_hand(server, app, workdir))
                else:
                    mine.append(ours(url, server, app, workdir))
                last = (hand if name == "hand" else mine)[-1]
                log(f"  round {r + 1} {name}: {last['seconds']:.2f}s")
        best_hand = min(h["seconds"] for h in hand)
        best_ours = min(m["seconds"] for m in mine)
        return {
            "mb_rows": mb,
            "mb_files": mb,
            "dump_bytes": hand[-1]["dump_bytes"],
            "hand_seconds": [round(h["seconds"], 3) for h in hand],
            "boxtasks_seconds": [round(m["seconds"], 3) for m in mine],
            "hand_archive_bytes": hand[-1]["archive_bytes"],
            "boxtasks_archive_bytes": mine[-1]["archive_bytes"],
            "speed_vs_hand": round(best_hand / best_ours, 3),
            "rss_before_kib": max(m["rss_before_kib"] for m in mine),
            "peak_rss_kib": max(m["peak_rss_kib"] for m in mine),
        }
    finally:
        _drop_app(url, server, workdir, app)


def _drop_app(url: str, server: str, workdir: Path, app: dict[str, Any]) -> None:
    from hosting.apps import databases

    databases.tear_down(_settings(workdir, url, server), app["configs"])
    shutil.rmtree(Path(app["data"]).parent, ignore_errors=True)


def render(result: dict[str, Any]) -> str:
    lines = [
        f"app backup: MySQL rows + files, boxtasks beside mysqldump > f && tar czf (best of {result['rounds']})",
        f"{'MB rows+files':>14} {'dump MB':>8} {'hand s':>7} {'ours s':>7} {'speed':>6} {'target':>8}"
        f" {'RSS before':>11} {'RSS peak':>9}",
    ]
    for s in result["sizes"]:
        ok = "ok" if s["speed_vs_hand"] >= TARGET_SPEED else "MISSED"
        lines.append(
            f"{s['mb_rows']:>6}+{s['mb_files']:<7} {s['dump_bytes'] / MB:>8.0f} {min(s['hand_seconds']):>7.2f}"
            f" {min(s['boxtasks_seconds']):>7.2f} {s['speed_vs_hand']:>5.2f}x {'>=0.8x ' + ok:>8}"
            f" {s['rss_before_kib'] / 1024:>8.1f} MB {s['peak_rss_kib'] / 1024:>6.1f} MB"
        )
    flat = result["peak_rss_growth_kib"]
    lines.append(
        f"peak RSS, larger size minus smaller: {flat / 1024:+.1f} MB (target within {FLAT_KIB // 1024} MB: "
        f"{'ok' if result['rss_flat'] else 'MISSED'})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--database-url", default=DEFAULT_DATABASE, help=f"MySQL/MariaDB server for both databases [{DEFAULT_DATABASE}]"
    )
    parser.add_argument("--mb", type=int, default=200, help="MB of rows and MB of files of the larger app [200]")
    parser.add_argument("--small-mb", type=int, default=None, help="the smaller app, for the RSS comparison [mb/4]")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each way per size, alternating [2]")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 8 MB and 2 MB, one round")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if args.quick:
        args.mb, args.small_mb, args.rounds = 8, 2, 1
    small = args.small_mb if args.small_mb is not None else max(1, args.mb // 4)
    for tool in ("mysqldump", "tar", "gzip"):
        if shutil.which(tool) is None:
            log(f"bench.app_backup needs {tool} on PATH")
            return 1
    from bench.taskrig import bench_database

    server = make_url(args.database_url).set(database=None).render_as_string(hide_password=False)
    workdir = Path(tempfile.mkdtemp(prefix="bt-bench-backup-", dir=os.environ.get("TMPDIR", "/var/tmp")))
    try:
        with bench_database(args.database_url) as url:
            sizes = [measure(url, server, workdir, mb, args.rounds) for mb in (small, args.mb)]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    growth = sizes[-1]["peak_rss_kib"] - sizes[0]["peak_rss_kib"]
    result = {
        "bench": "app_backup",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "sizes": sizes,
        "peak_rss_growth_kib": growth,
        "rss_flat": growth <= FLAT_KIB,
        "speed_ok": all(s["speed_vs_hand"] >= TARGET_SPEED for s in sizes),
    }
    print(json.dumps(result, indent=1) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
