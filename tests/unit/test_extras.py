"""psycopg and redis are extras: a PostgreSQL URL without the driver stops with one line naming the extra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Run `boxtasks db upgrade` as if psycopg were not installed (a None entry in sys.modules makes
# `import psycopg` fail as a missing module does); nothing is connected to.
_WITHOUT_PSYCOPG = (
    "import sys; sys.modules['psycopg'] = None; sys.modules['psycopg2'] = None; "
    "from cli.main import main; sys.exit(main(['db', 'upgrade']))"
)


def test_a_postgres_url_without_its_driver_names_the_extra() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOXTASKS_")}
    env["BOXTASKS_DATABASE_URL"] = "postgresql+psycopg://boxtasks:s3cret-pw@127.0.0.1:5432/boxtasks"
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PSYCOPG], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "pip install 'boxtasks[postgres]'" in done.stderr
    assert "s3cret-pw" not in done.stderr and "Traceback" not in done.stderr
