"""Run one bench script (`python -m bench.<module>`) with `--quick --json` against the shared services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from numbers import Real
from pathlib import Path
from typing import Any

from tests.services import MARIADB_ADMIN, require

REPO = Path(__file__).resolve().parents[1]


def is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def quick_report(module: str, *, broker_url: str, timeout: float = 420) -> dict[str, Any]:
    """`python -m bench.<module> --quick --json` on `broker_url` (the session's vhost): its JSON report; a
    non-zero exit fails with both outputs' tails."""
    require("127.0.0.1", 3306, "MariaDB")
    require("127.0.0.1", 5672, "RabbitMQ")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOXTASKS_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            f"bench.{module}",
            "--quick",
            "--json",
            "--database-url",
            MARIADB_ADMIN,
            "--broker-url",
            broker_url,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result
