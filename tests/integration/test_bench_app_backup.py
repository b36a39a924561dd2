"""`python -m bench.app_backup --quick --json` runs end to end against MariaDB: the shape of its report.

No speed is asserted: the machine is shared and noisy; the figures are the bench's business.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.benchrun import REPO, is_number
from tests.services import MARIADB_ADMIN, require

pytestmark = [pytest.mark.mariadb]


def test_the_quick_run_reports_both_ways_for_two_sizes_and_leaves_nothing() -> None:
    require("127.0.0.1", 3306, "MariaDB")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOXTASKS_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.app_backup", "--quick", "--json", "--database-url", MARIADB_ADMIN],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    assert report["bench"] == "app_backup" and [s["mb_rows"] for s in report["sizes"]] == [2, 8]
    for size in report["sizes"]:
        assert size["dump_bytes"] > size["mb_rows"] * 500_000  # the rows were there to dump
        assert size["boxtasks_archive_bytes"] > 0 and size["hand_archive_bytes"] > 0
        assert all(is_number(s) and s > 0 for s in size["hand_seconds"] + size["boxtasks_seconds"])
        assert size["peak_rss_kib"] >= size["rss_before_kib"] > 0
    assert is_number(report["peak_rss_growth_kib"]) and isinstance(report["rss_flat"], bool)
    # The apps' databases and users are gone from the server (their names start app_bench_).
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    admin = create_engine(MARIADB_ADMIN, poolclass=NullPool)
    with admin.connect() as conn:
        left = [r[0] for r in conn.execute(text("SHOW DATABASES LIKE 'app\\_bench\\_%'"))]
    admin.dispose()
    assert left == []
