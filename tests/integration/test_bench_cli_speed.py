"""`python -m bench.cli_speed --quick --json` runs end to end on MariaDB: the shape of its report.

No speed is asserted: the machine is shared and noisy; the figures are the bench's business.
"""

from __future__ import annotations

import pytest

from tests.benchrun import is_number, quick_report

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.rabbitmq]  # tests.benchrun checks both


def test_every_command_is_timed_beside_python() -> None:
    report = quick_report("cli_speed", broker_url="")
    assert report["bench"] == "cli_speed"
    assert report["database"].startswith("mysql")
    figures = {f["command"]: f for f in report["figures"]}
    assert list(figures) == [
        "python -c pass",
        "import sqla+pydantic",
        "boxtasks --help",
        "boxtasks task list",
        "boxtasks locks",
    ]
    assert figures["python -c pass"]["target_ms"] is None and figures["python -c pass"]["over_python_ms"] == 0
    for figure in figures.values():
        for key in ("median_ms", "min_ms", "max_ms", "cpu_ms", "over_python_ms"):
            assert is_number(figure[key]), (figure["command"], key)
        assert figure["min_ms"] <= figure["median_ms"] <= figure["max_ms"]
    assert [figures[c]["target_ms"] for c in list(figures)[1:]] == [None, 150.0, 300.0, 300.0]
