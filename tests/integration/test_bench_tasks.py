"""`python -m bench.task_rates --quick --json` runs end to end: its report's shape, every task ended as intended.

No speed is asserted: the machine is shared and noisy; the figures are the bench's business.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.benchrun import is_number as _number
from tests.benchrun import quick_report

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.rabbitmq]


@pytest.fixture(scope="module")
def report(rabbitmq_url: str) -> dict[str, Any]:
    return quick_report("task_rates", broker_url=rabbitmq_url)


def test_no_errors_and_every_task_ended_as_intended(report: dict[str, Any]) -> None:
    assert report["bench"] == "tasks"
    assert report["errors"] == []
    tasks = report["tasks"]
    assert tasks["all_succeeded"] is True
    assert tasks["unexpected"] == []
    assert tasks["locks_left"] is False
    assert tasks["bare"]["succeeded"] == tasks["bare"]["sent"] > 0
    assert tasks["bare"]["failed"] == 0
    by_state = tasks["locked"]["by_state"]
    # (d) interrupts its holders on purpose; everything else succeeds.
    assert set(by_state) <= {"succeeded", "interrupted"}
    assert by_state.get("interrupted", 0) == tasks["interrupted_on_purpose"] == report["recovery"]["repeats"]
    assert by_state["succeeded"] + by_state.get("interrupted", 0) == tasks["locked"]["sent"]


def test_throughput_shape(report: dict[str, Any]) -> None:
    t = report["throughput"]
    assert set(t["kinds"]) == {"bare", "celery_db", "row_only", "locked"}
    for section in (t, t["prefilled"]):
        for kind in t["kinds"]:
            assert section[kind]["tasks"] == t["n"] * t["rounds"]
            assert _number(section[kind]["tasks_per_s"]) and section[kind]["tasks_per_s"] > 0
            assert _number(section[kind]["seconds"])
        for ratios in (section, section["vs_celery_db"]):
            assert _number(ratios["ratio"])
            assert len(ratios["ratio_per_round"]) == t["rounds"]
    # The target compares with a bare Celery task that writes nothing.
    assert t["baseline"] == "bare"
    assert t["ratio"] == round(t["locked"]["tasks_per_s"] / t["bare"]["tasks_per_s"], 3)
    assert t["target"] == 0.8
    assert isinstance(t["met"], bool)
    assert _number(t["row_only_vs_bare"])
    # The reference kind really was recorded by Celery: one SUCCESS row per task (warm-up included).
    warmup = report["meta"]["params"]["warmup"]
    celery_db_sent = t["n"] * t["rounds"] * 2 + warmup + warmup // 4
    assert t["celery_db_rows"] == celery_db_sent
    assert _number(t["extra_process_ms_per_locked_task"])


def test_makespan_shape(report: dict[str, Any]) -> None:
    m = report["makespan"]
    assert _number(m["ideal_s"]) and m["ideal_s"] > 0
    assert _number(m["best_whole_task_schedule_s"]) and m["best_whole_task_schedule_s"] >= m["ideal_s"]
    assert m["target"] == 1.15 and isinstance(m["met"], bool)
    runs = {(r["mode"], r["order"]): r for r in m["runs"]}
    assert set(runs) == {("lockman", "backup_first"), ("lockman", "apps_first"), ("global", "backup_first")}
    for run in runs.values():
        assert _number(run["makespan_s"]) and _number(run["vs_ideal"]) and isinstance(run["met"], bool)
        assert len(run["timeline"]) == m["apps"] + 1
        for entry in run["timeline"]:
            assert entry["body_end"] >= entry["body_start"]
    # One global lock runs the tasks one after another: never shorter than the work itself.
    assert runs[("global", "backup_first")]["makespan_s"] >= m["total_work_s"]


def test_handoff_and_recovery_shape(report: dict[str, Any]) -> None:
    h = report["handoff"]
    assert h["measured"] + h["not_waited"] == h["pairs"] and h["measured"] > 0
    for key in ("median_ms", "p99_ms", "min_ms", "max_ms"):
        assert _number(h[key])
    assert h["min_ms"] <= h["median_ms"] <= h["p99_ms"] <= h["max_ms"]
    assert isinstance(h["met"], bool)
    d = report["recovery"]
    assert d["repeats"] == len(d["samples_s"]) > 0
    assert _number(d["median_s"]) and _number(d["max_s"]) and d["median_s"] <= d["max_s"]
    assert d["target_s"] == 2.0 and isinstance(d["met"], bool)


def test_meta(report: dict[str, Any]) -> None:
    meta = report["meta"]
    assert meta["quick"] is True
    assert meta["concurrency"] == 4
    assert _number(meta["elapsed_s"])
