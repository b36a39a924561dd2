"""`python -m bench.scale --quick --json` runs end to end: the shape of its report, and every task succeeded.

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
    return quick_report("scale", broker_url=rabbitmq_url)


def test_no_errors_and_every_task_succeeded(report: dict[str, Any]) -> None:
    assert report["bench"] == "scale"
    assert report["errors"] == []
    scale = report["scale"]
    tasks = scale["tasks"]
    assert tasks["all_succeeded"] is True
    assert tasks["failed"] == []
    assert tasks["locks_left"] is False
    # The full backup and every apptask.
    assert tasks["sent"] == scale["apptasks"] + 1
    assert tasks["by_state"] == {"succeeded": tasks["sent"]}
    # The backup went through every app, each under its own lock.
    assert scale["backup"]["copied"] == scale["apps"]
    assert scale["acquire"]["nested"]["n"] == scale["apps"]


def test_acquire_and_retries_shape(report: dict[str, Any]) -> None:
    a = report["scale"]["acquire"]
    assert a["apptasks"]["n"] == report["scale"]["apptasks"]
    assert a["all"]["n"] == a["top_level"]["n"] + a["nested"]["n"]
    for key in ("top_level", "apptasks", "nested", "all"):
        spread = a[key]
        assert _number(spread["p50_ms"]) and _number(spread["p99_ms"]) and _number(spread["max_ms"])
        assert 0 <= spread["p50_ms"] <= spread["p99_ms"] <= spread["max_ms"]
    assert _number(a["backup_top_level_ms"])
    assert a["target_p99_ms"] == 50.0 and isinstance(a["met"], bool)
    c = report["scale"]["cas_retries"]
    for key in ("top_level_total", "nested_total", "nested_refused_tries"):
        assert isinstance(c[key], int) and c[key] >= 0
    assert _number(c["top_level_per_acquire"]) and _number(c["nested_per_acquire"])


def test_throughput_makespan_and_memory_shape(report: dict[str, Any]) -> None:
    s = report["scale"]
    assert s["processes"] == 8
    assert _number(s["throughput"]["tasks_per_s"]) and s["throughput"]["tasks_per_s"] > 0
    m = s["makespan"]
    for key in ("makespan_s", "ideal_s", "total_work_s", "vs_ideal", "backup_body_s"):
        assert _number(m[key]) and m[key] > 0
    assert m["total_work_s"] == pytest.approx(m["apptask_work_s"] + m["backup_work_s"], abs=0.01)
    # Nothing ends sooner than the work spread over every process.
    assert m["makespan_s"] >= m["ideal_s"]
    rss = s["rss"]
    assert rss["pool_processes"] == s["processes"]
    assert _number(rss["pool_peak_hwm_mib"]) and rss["pool_peak_hwm_mib"] > 0
    assert len(rss["pool_hwm_mib"]) == rss["pool_processes"]


def test_ceiling_shape(report: dict[str, Any]) -> None:
    c = report["ceiling"]
    assert [r["n"] for r in c["runs"]] == report["meta"]["params"]["ceiling_ns"]
    for r in c["runs"]:
        assert r["errors"] == []
        assert r["pairs"] > 0
        assert r["lock_ops_per_s"] == pytest.approx(2 * r["pairs_per_s"], rel=0.01)
        assert 0 <= r["acquire_p50_ms"] <= r["acquire_p99_ms"] <= r["acquire_max_ms"]
        assert _number(r["cas_retries_per_pair"])
    assert c["target_p99_ms"] == 50.0
    crossing = c["crossing"]
    assert isinstance(crossing["verdict"], str) and crossing["verdict"]
    assert crossing["ops_per_s"] is None or _number(crossing["ops_per_s"])
    assert _number(crossing["max_ops_per_s"])


def test_meta(report: dict[str, Any]) -> None:
    meta = report["meta"]
    assert meta["quick"] is True
    assert _number(meta["elapsed_s"])
