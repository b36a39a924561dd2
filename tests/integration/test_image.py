"""compose/Dockerfile builds for real, and the image runs `boxtasks --help` and `boxtasks db upgrade`.

No registry is reachable in CI, so the base is made here from Debian packages (.ci/base-image.sh:
debootstrap + python3, kept as a tar under BOXTASKS_IMAGE_CACHE and reused by later runs) and
`docker import`ed into the test's private engine. The image's pip cannot reach PyPI through this
machine's TLS proxy either, so the host downloads wheels for the base's Python (kept in the same
cache) and the build installs from them alone (the Dockerfile's WHEELS): build and containers run
with no network at all.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.dockerd import Dockerd
from tests.services import in_ci

pytestmark = [pytest.mark.slow, pytest.mark.docker]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("BOXTASKS_IMAGE_CACHE", "/var/cache/boxtasks-ci"))
BASE = "boxtasks-base:trixie"
IMAGE = "boxtasks-test/boxtasks:image-test"
DEV_ONLY = ("pytest", "mypy", "ruff", "matplotlib", "schemathesis", "hypothesis")
BASE_PYTHON = "3.13"  # trixie's python3
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(5, 42)] + ["manylinux2014_x86_64", "linux_x86_64"]


def _unavailable(message: str) -> None:
    """No mirror or no PyPI: skip locally, fail under CI (as a missing service does)."""
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def _download_wheels(into: Path) -> None:
    """Wheels of every runtime dependency (and the build backend) for the base's Python, from PyPI."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    requirements = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--python-version", BASE_PYTHON,
         "--implementation", "cp", *platforms, "--dest", str(into), *requirements],
        capture_output=True,
        text=True,
        timeout=1200,
    )  # fmt: skip
    if done.returncode != 0:
        _unavailable(f"pip download (PyPI) failed:\n{done.stderr[-3000:]}")


def _context(into: Path, wheels: Path) -> Path:
    """The build context `docker build .` would send (the repository minus .dockerignore), plus the wheels."""
    from docker.utils.build import exclude_paths

    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for relative in exclude_paths(str(REPO), patterns, dockerfile="compose/Dockerfile"):
        source = REPO / relative
        if source.is_file():
            (into / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / relative)
    shutil.copytree(wheels, into / "wheels")
    return into


@pytest.fixture(scope="module")
def image(dockerd: Dockerd, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The boxtasks image built from compose/Dockerfile on the Debian-made base."""
    import docker

    started = time.monotonic()
    base_tar = CACHE / "base-trixie.tar"
    done = subprocess.run(
        ["bash", str(REPO / ".ci" / "base-image.sh"), str(base_tar), "trixie"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        _unavailable(f".ci/base-image.sh (debootstrap from the Debian mirror) failed:\n{done.stderr[-3000:]}")
    made_base = time.monotonic()
    wheels = CACHE / f"wheels-cp{BASE_PYTHON.replace('.', '')}"
    _download_wheels(wheels)
    context = _context(tmp_path_factory.mktemp("context"), wheels)
    downloaded = time.monotonic()
    repository, tag = BASE.rsplit(":", 1)
    dockerd.client.api.import_image(src=str(base_tar), repository=repository, tag=tag)
    imported = time.monotonic()
    try:
        dockerd.client.images.build(
            path=str(context),
            dockerfile="compose/Dockerfile",
            buildargs={"BASE": BASE, "WHEELS": "wheels"},
            network_mode="none",
            tag=IMAGE,
            rm=True,
            forcerm=True,
            timeout=1800,
        )
    except docker.errors.BuildError as err:
        log = "".join(str(chunk.get("stream") or chunk.get("error") or "") for chunk in err.build_log)
        pytest.fail(f"docker build failed: {err}\n{log[-4000:]}")
    logger.info(
        "image: base %.0fs, wheels and context %.0fs, import %.0fs, build %.0fs",
        made_base - started,
        downloaded - made_base,
        imported - downloaded,
        time.monotonic() - imported,
    )
    return IMAGE


def _run(dockerd: Dockerd, image: str, command: list[str], **kwargs: Any) -> tuple[int, str]:
    container = dockerd.client.containers.run(image, command, network_mode="none", detach=True, **kwargs)
    try:
        code = int(container.wait(timeout=300)["StatusCode"])
        return code, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def test_help_runs_in_the_image(dockerd: Dockerd, image: str) -> None:
    code, out = _run(dockerd, image, ["boxtasks", "--help"])
    assert code == 0, out
    for command in ("db", "task", "run", "api"):
        assert command in out, out


def test_db_upgrade_on_sqlite_in_the_image(dockerd: Dockerd, image: str) -> None:
    tables_sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    show_tables = (
        "import sqlite3; c = sqlite3.connect('/var/lib/boxtasks/boxtasks.db'); "
        f'print("tables:", *sorted(r[0] for r in c.execute("{tables_sql}")))'
    )
    # Twice: a second upgrade finds nothing to do and still succeeds.
    script = f"boxtasks db upgrade && boxtasks db upgrade && python -c {shlex.quote(show_tables)}"
    code, out = _run(
        dockerd,
        image,
        ["sh", "-c", script],
        environment={"BOXTASKS_DATABASE_URL": "sqlite:////var/lib/boxtasks/boxtasks.db"},
    )
    assert code == 0, out
    tables = next(line for line in out.splitlines() if line.startswith("tables:")).split()[1:]
    assert {"alembic_version", "locks", "tasks", "backups"} <= set(tables), out


def test_the_image_runs_as_boxtasks_without_dev_tools(dockerd: Dockerd, image: str) -> None:
    code, out = _run(dockerd, image, ["sh", "-c", "id -un && pip list --format=freeze"])
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "boxtasks", out
    installed = {line.split("==")[0].lower() for line in lines[1:]}
    assert "boxtasks" in installed and "celery" in installed, out
    assert not installed & set(DEV_ONLY), f"dev tools in the image: {sorted(installed & set(DEV_ONLY))}"
    assert "psycopg" not in installed and "redis" not in installed, "extras installed by default"
