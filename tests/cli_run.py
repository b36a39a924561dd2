"""Run `boxtasks` as a subprocess, as scripts do."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

from tests.e2e.harness import REPO, VENV_BIN


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def boxtasks(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> Result:
    proc = subprocess.run(
        [str(VENV_BIN / "boxtasks"), *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)
