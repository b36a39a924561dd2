"""Lock throughput and latency: lockman beside the simple CAS loop, GET_LOCK and a row per lock.

    .venv/bin/python -m bench.locks                       # readable table, MariaDB on 127.0.0.1
    .venv/bin/python -m bench.locks --json --seconds 0.5 --n 1,2
    .venv/bin/python -m bench.locks --database-url postgresql+psycopg://postgres@127.0.0.1:5432

One run creates its own database on the server (`bt_lockbench_<random>`), migrates it with
`models.migrate.upgrade`, and drops it at the end. For each key pattern and each N it starts N
processes (multiprocessing, fork) that stay for all implementations and run them in turn, in
`--slices` interleaved slices (order reversed every other slice) that add up to `--seconds` per
implementation: on a shared, noisy machine every implementation sees the same moments.

Key patterns:

* `distinct`: process i takes an apptask's plan, `platform` S + `app:<i>` X (lockman, naive_cas;
  no two processes conflict, but all write the one lock row); get_lock and row_per_lock have no
  shared mode and take only `app:<i>` X.
* `same`: every process takes `app:same` X. A process that is not granted waits (polls with
  jittered backoff 0.5-20 ms; GET_LOCK waits in the server) and asks again.

Figures per cell: pairs_per_s (acquire+release pairs completed per second, all processes),
acquire_p50_ms / acquire_p99_ms (from the first attempt until granted, waits included), and
cas_retries_per_acquire (failed compare-and-swap writes, in the acquire and in the release of a
pair, per pair; 0 for get_lock and row_per_lock).

Mutual exclusion is checked live (holders of a key counted in shared memory must be exactly 1
while held), afterwards for the same key (no two hold intervals overlap on the monotonic clock),
and at the end of each cell (the lock row holds nothing and nobody waits; no lock row is left).
Any violation makes the exit status 1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from threading import BrokenBarrierError
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import URL, make_url

from bench.lockimpls import (
    CAS_IMPLS,
    CTL_IMPL,
    CTL_MEASURE,
    CTL_START,
    CTL_STOP,
    GIVE_UP,
    IMPL_TYPES,
    IMPLS,
    MYSQL_ONLY,
    GroupSpec,
    WorkerResult,
    bench_meta,
    row_locks,
    run_group_worker,
)
from lockman.store import LockStore
from models.migrate import upgrade

DEFAULT_URL = os.environ.get("BOXTASKS_BENCH_DATABASE_URL", "mysql+pymysql://root@127.0.0.1:3306")
KEYS = ("distinct", "same")
#: Floors (not targets to tune for): lockman / naive_cas pairs_per_s on distinct keys, by N.
TARGETS = {1: 1.3, 8: 1.3, 16: 1.3}
#: Floor: lockman's p99 acquire at this N on distinct keys at most this share of naive_cas's.
P99_N, P99_MAX = 16, 0.5


@dataclass(slots=True)
class Cell:
    impl: str
    keys: str
    n: int
    pairs_per_s: float
    acquire_p50_ms: float | None
    acquire_p99_ms: float | None
    cas_retries_per_acquire: float
    violations: int
    errors: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "impl": self.impl,
            "keys": self.keys,
            "n": self.n,
            "pairs_per_s": round(self.pairs_per_s, 1),
            "acquire_p50_ms": _round(self.acquire_p50_ms),
            "acquire_p99_ms": _round(self.acquire_p99_ms),
            "cas_retries_per_acquire": round(self.cas_retries_per_acquire, 3),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the database


@contextmanager
def bench_database(server_url: str) -> Iterator[str]:
    """A fresh database beside the others on the server, migrated; dropped afterwards."""
    base = make_url(server_url)
    name = f"bt_lockbench_{uuid.uuid4().hex[:8]}"
    backend = base.get_backend_name()
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bt_lockbench_") as tmp:
            url = f"sqlite:///{Path(tmp) / (name + '.db')}"
            upgrade(url)
            _create_bench_tables(url)
            yield url
        return
    if backend in ("mysql", "mariadb"):
        admin: URL = base.set(database=None)
        create, drop = f"CREATE DATABASE {name} CHARACTER SET utf8mb4", f"DROP DATABASE IF EXISTS {name}"
    elif backend == "postgresql":
        admin = base.set(database=base.database or "postgres")
        create, drop = f"CREATE DATABASE {name}", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    else:
        raise SystemExit(f"unsupported database {backend!r}: use MariaDB/MySQL, PostgreSQL or SQLite")
    url = base.set(database=name).render_as_string(hide_password=False)
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(create))
    engine.dispose()
    try:
        upgrade(url)
        _create_bench_tables(url)
        yield url
    finally:
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(drop))
        engine.dispose()


def _create_bench_tables(url: str) -> None:
    engine = create_engine(url)
    bench_meta.create_all(engine)
    engine.dispose()


# ----------------------------------------------------------------------------- one group


@dataclass(slots=True)
class _Tally:
    pairs: int = 0
    seconds: float = 0.0
    failed_cas: int = 0
    violations: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run_group(url: str, keys: str, n: int, impls: list[str], *, seconds: float, slices: int, hold: float) -> list[Cell]:
    """N processes; every implementation in `slices` interleaved slices adding up to `seconds`."""
    group = GroupSpec(
        keys=keys,
        n=n,
        url=url,
        impls=tuple(impls),
        tag=uuid.uuid4().hex[:8],
        lease=max(120.0, 3 * seconds * len(impls)),
        hold=hold,
    )
    engine = create_engine(url)
    with engine.begin() as conn:
        for impl in impls:
            LockStore(group.row_id(impl)).ensure_row(conn)
    engine.dispose()

    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(n + 1)
    control = ctx.Array("d", 4, lock=False)
    guard = ctx.Lock()
    counts = ctx.Array("i", n, lock=False)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=run_group_worker, args=(group, i, barrier, control, guard, counts, out), daemon=True)
        for i in range(n)
    ]
    for p in procs:
        p.start()
    tallies = {impl: _Tally() for impl in impls}
    slice_s = seconds / slices
    warmup = min(0.1, slice_s / 4)  # connections are open already: only the queue needs to form
    try:
        barrier.wait(timeout=300)
        for k in range(slices):
            for impl in impls if k % 2 == 0 else reversed(impls):
                tally = tallies[impl]
                control[CTL_IMPL] = impls.index(impl)
                barrier.wait(timeout=300)  # order given: connect
                barrier.wait(timeout=300)  # all connected
                now = time.monotonic()
                control[CTL_START], control[CTL_MEASURE] = now + 0.01, now + 0.01 + warmup
                control[CTL_STOP] = now + 0.01 + warmup + slice_s
                barrier.wait(timeout=300)  # go
                results = _collect(out, n, timeout=warmup + slice_s + GIVE_UP + 60)
                tally.seconds += slice_s
                tally.pairs += sum(r.pairs for r in results)
                tally.failed_cas += sum(r.failed_cas for r in results)
                tally.latencies += [x for r in results for x in r.latencies_ms]
                tally.violations += sum(r.violations for r in results) + _overlaps(results)
                tally.violations += _leftovers(url, group, impl, tally.errors)
                tally.errors += [f"process {r.idx}: {r.error}" for r in results if r.error]
                if len(results) < n:
                    raise RuntimeError(f"{impl}: only {len(results)} of {n} processes reported")
        control[CTL_IMPL] = -1
        barrier.wait(timeout=300)
    except (BrokenBarrierError, RuntimeError) as err:
        early = [r.error for r in _collect(out, n, timeout=1) if r.error]
        for tally in tallies.values():
            tally.errors.append(f"group keys={keys} N={n} aborted: {err!r} {' '.join(early)}".strip())
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    cells = []
    for impl, t in tallies.items():
        t.latencies.sort()
        cells.append(
            Cell(
                impl=impl,
                keys=keys,
                n=n,
                pairs_per_s=t.pairs / t.seconds if t.seconds else 0.0,
                acquire_p50_ms=_percentile(t.latencies, 50),
                acquire_p99_ms=_percentile(t.latencies, 99),
                cas_retries_per_acquire=(t.failed_cas / t.pairs) if t.pairs else 0.0,
                violations=t.violations,
                errors=t.errors,
            )
        )
    return cells


def _collect(out: Any, n: int, *, timeout: float) -> list[WorkerResult]:
    results: list[WorkerResult] = []
    deadline = time.monotonic() + timeout
    while len(results) < n and time.monotonic() < deadline:
        with suppress(queue.Empty):
            results.append(out.get(timeout=min(1.0, max(0.01, deadline - time.monotonic()))))
    return results


def _percentile(ordered: list[float], pct: float) -> float | None:
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _overlaps(results: list[WorkerResult]) -> int:
    """Hold intervals on one key from different processes must not overlap."""
    spans = sorted((a, b, r.idx) for r in results for a, b in r.intervals)
    bad, latest_end, latest_idx = 0, float("-inf"), -1
    for start, end, idx in spans:
        if start < latest_end and idx != latest_idx:
            bad += 1
        if end > latest_end:
            latest_end, latest_idx = end, idx
    return bad


def _leftovers(url: str, group: GroupSpec, impl: str, errors: list[str]) -> int:
    """After every pair was released, nothing may be held or waited for."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if impl in CAS_IMPLS:
                snap = LockStore(group.row_id(impl)).read(conn)
                if snap.table.holders or snap.table.waiters:
                    errors.append(f"{impl}: lock row not empty after a slice: {snap.table.to_json()}")
                    return 1
            elif impl == "row_per_lock":
                prefix = group.lock_name("")
                left = conn.execute(
                    select(func.count()).select_from(row_locks).where(row_locks.c.name.like(prefix + "%"))
                ).scalar_one()
                if left:
                    errors.append(f"{impl}: {left} lock rows left after a slice")
                    return 1
    finally:
        engine.dispose()
    return 0


# ----------------------------------------------------------------------------- the run


def ratio(cells: list[Cell], cell: Cell, base: str = "naive_cas") -> float | None:
    other = next((c for c in cells if c.impl == base and c.keys == cell.keys and c.n == cell.n), None)
    if other is None or other.pairs_per_s <= 0:
        return None
    return cell.pairs_per_s / other.pairs_per_s


def _p99_ratio(cells: list[Cell], cell: Cell) -> float | None:
    other = next((c for c in cells if c.impl == "naive_cas" and c.keys == cell.keys and c.n == cell.n), None)
    if other is None or not other.acquire_p99_ms or cell.acquire_p99_ms is None:
        return None
    return cell.acquire_p99_ms / other.acquire_p99_ms


def render_table(cells: list[Cell], meta: dict[str, Any]) -> str:
    lines = [
        f"database {meta['backend']}; {meta['cpus']} CPUs; {meta['seconds']:g}s measured per cell, in "
        f"{meta['slices']} slices interleaved with the other implementations at the same N",
        f"machine load average (1 min): {meta['load']} (other work on the machine slows every cell)",
        "distinct keys: lockman/naive_cas take platform S + app:<i> X; get_lock/row_per_lock take app:<i> X",
        "same key: all take app:same X; a process not granted polls (0.5-20 ms backoff) or waits in GET_LOCK",
        "",
        f"{'keys':<9}{'N':>3}  {'impl':<13}{'pairs/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'retries/acq':>12}"
        f"{'vs naive':>10}  target",
    ]
    for c in cells:
        vs, target = "", ""
        if c.impl == "lockman":
            r = ratio(cells, c)
            vs = "" if r is None else f"{r:.2f}x"
            want = TARGETS.get(c.n) if c.keys == "distinct" else None
            if want is not None and r is not None:
                target = f">= {want:.1f}x {'ok' if r >= want else 'MISSED'}"
            p99 = _p99_ratio(cells, c) if c.keys == "distinct" and c.n == P99_N else None
            if p99 is not None:
                target += f"; p99 {p99:.2f}x naive (<= {P99_MAX}x {'ok' if p99 <= P99_MAX else 'MISSED'})"
        lines.append(
            f"{c.keys:<9}{c.n:>3}  {c.impl:<13}{c.pairs_per_s:>9.1f}{_fmt(c.acquire_p50_ms):>9}"
            f"{_fmt(c.acquire_p99_ms):>9}{c.cas_retries_per_acquire:>12.2f}{vs:>10}  {target}".rstrip()
        )
    violations = sum(c.violations for c in cells)
    lines += ["", f"mutual-exclusion violations: {violations} (target 0{', ok' if violations == 0 else ', FAILED'})"]
    return "\n".join(lines)


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _csv(value: str, kind: type[Any] = str) -> list[Any]:
    return [kind(v.strip()) for v in value.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--database-url", default=DEFAULT_URL, help=f"server to create the bench database on [{DEFAULT_URL}]"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell [3]")
    parser.add_argument("--slices", type=int, default=3, help="interleaved slices the seconds are cut into [3]")
    parser.add_argument("--n", default="1,2,4,8,16", help="process counts [1,2,4,8,16]")
    parser.add_argument("--impl", default=",".join(IMPLS), help=f"implementations [{','.join(IMPLS)}]")
    parser.add_argument("--keys", default=",".join(KEYS), help="key patterns [distinct,same]")
    parser.add_argument("--hold-ms", type=float, default=0.0, help="time each holder keeps the lock [0]")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)

    ns = _csv(args.n, int)
    impls = _csv(args.impl)
    keys = _csv(args.keys)
    for impl in impls:
        if impl not in IMPL_TYPES:
            parser.error(f"unknown implementation {impl!r}; choose from {', '.join(IMPL_TYPES)}")
    for k in keys:
        if k not in KEYS:
            parser.error(f"unknown key pattern {k!r}; choose from {', '.join(KEYS)}")
    if not ns or min(ns) < 1:
        parser.error("--n needs positive process counts")
    backend = make_url(args.database_url).get_backend_name()
    if backend not in ("mysql", "mariadb"):
        skipped = [i for i in impls if i in MYSQL_ONLY]
        if skipped:
            log(f"skipping {', '.join(skipped)}: MySQL/MariaDB only")
        impls = [i for i in impls if i not in MYSQL_ONLY]
    slices = max(1, min(args.slices, round(args.seconds / 0.25) or 1))

    cells: list[Cell] = []
    started = time.monotonic()
    load_before = _load()
    with bench_database(args.database_url) as url:
        for k in keys:
            for n in ns:
                group = run_group(url, k, n, impls, seconds=args.seconds, slices=slices, hold=args.hold_ms / 1000)
                cells += group
                for cell in group:
                    log(
                        f"{k:<9}N={n:<3}{cell.impl:<13}{cell.pairs_per_s:9.1f} pairs/s  "
                        f"p50 {_fmt(cell.acquire_p50_ms)} ms  p99 {_fmt(cell.acquire_p99_ms)} ms  "
                        f"retries/acq {cell.cas_retries_per_acquire:.2f}"
                        + (f"  VIOLATIONS {cell.violations}" if cell.violations else "")
                    )
                    for err in cell.errors:
                        log(f"  error: {err.strip()}")
    # Present by key pattern, N, then a fixed implementation order (the run order was interleaved).
    cells.sort(key=lambda c: (KEYS.index(c.keys), c.n, impls.index(c.impl)))
    violations = sum(c.violations for c in cells)
    errors = sum(len(c.errors) for c in cells)
    log(f"done in {time.monotonic() - started:.0f}s")
    if args.json:
        print(json.dumps({"runs": [c.as_json() for c in cells], "violations": violations}))
    else:
        meta = {
            "backend": backend,
            "seconds": args.seconds,
            "slices": slices,
            "cpus": os.cpu_count(),
            "load": f"{load_before} before, {_load()} after",
        }
        print(render_table(cells, meta))
    if violations:
        return 1
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
