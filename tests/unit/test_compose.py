"""compose/: the services, their healthchecks and start order, required secrets, `docker compose config`,
and a Dockerfile whose build context holds what it copies (tests/integration/test_image.py builds it).

The file is read as YAML for its structure, then validated by the compose CLI itself: the compose
plugin (`docker compose`) when installed, else Debian's docker-compose (.ci/compose.sh installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import setuptools
import yaml

from tests.services import in_ci

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose"
SECRETS = ("MARIADB_PASSWORD", "MARIADB_ROOT_PASSWORD", "RABBITMQ_PASSWORD", "FLOWER_PASSWORD")
APP_SERVICES = ("api", "worker", "beat", "flower")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return dict(yaml.safe_load((COMPOSE / "compose.yaml").read_text()))


def test_services_and_start_order(spec: dict[str, Any]) -> None:
    services = spec["services"]
    assert set(services) == {"mariadb", "rabbitmq", "migrate", *APP_SERVICES}
    for name in ("mariadb", "rabbitmq", "api", "worker", "flower"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["depends_on"] == {"mariadb": {"condition": "service_healthy"}}
    assert services["migrate"]["command"] == ["boxtasks", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    for name in APP_SERVICES:
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "rabbitmq": {"condition": "service_healthy"},
        }, name


def test_workers_scale(spec: dict[str, Any]) -> None:
    worker = spec["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert "worker@%h" in worker["command"]  # a node name of its own per replica


def test_secrets_are_required_and_examples_name_them() -> None:
    text = (COMPOSE / "compose.yaml").read_text()
    example = (COMPOSE / ".env.example").read_text()
    for name in SECRETS:
        assert "${" + name + ":?" in text, name
        assert f"\n{name}=\n" in example, name
    assert "BOXTASKS_ENV: production" in text


def _compose_cli() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    message = "no compose CLI (docker compose plugin or docker-compose): bash .ci/compose.sh installs one"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def _config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [*_compose_cli(), "-f", str(COMPOSE / "compose.yaml"), "config"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_config_validates() -> None:
    done = _config({name: f"test-{name.lower()}" for name in SECRETS})
    assert done.returncode == 0, done.stderr
    rendered = yaml.safe_load(done.stdout)
    assert "test-mariadb_password@mariadb" in rendered["services"]["worker"]["environment"]["BOXTASKS_DATABASE_URL"]


def test_compose_config_refuses_a_missing_secret() -> None:
    env = {name: "x" for name in SECRETS if name != "RABBITMQ_PASSWORD"}
    done = _config(env)
    assert done.returncode != 0
    assert "RABBITMQ_PASSWORD" in done.stderr


def _context_files() -> set[str]:
    """The files `docker build` sends from the repository, as .dockerignore leaves them."""
    from docker.utils.build import exclude_paths

    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return {str(path) for path in exclude_paths(str(REPO), patterns, dockerfile="compose/Dockerfile")}


def test_the_dockerfile_copies_only_what_the_context_holds() -> None:
    dockerfile = (COMPOSE / "Dockerfile").read_text()
    context = _context_files()
    sources = [
        source
        for line in dockerfile.splitlines()
        if (match := re.match(r"^(?:COPY|ADD)\s+(?!--from)(.+)$", line.strip()))
        for source in match.group(1).split()[:-1]
        if not source.startswith("--")
    ]
    assert sources, "no COPY in compose/Dockerfile"
    for source in sources:
        prefix = source.rstrip("/").removeprefix("./")
        assert prefix in ("", ".") or any(f == prefix or f.startswith(prefix + "/") for f in context), (
            f"compose/Dockerfile copies {source}, which the build context does not hold"
        )
    assert re.search(r"^ARG BASE=python:3\.1[1-9]", dockerfile, re.MULTILINE), (
        "the default base is a public Python image"
    )


def test_the_context_holds_every_package_pip_installs() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    context = _context_files()
    assert {"pyproject.toml", project["project"]["readme"]} <= context
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = setuptools.find_packages(where=str(REPO), include=include)
    # Every package under a listed top level installs, subpackages included (a hand list once missed them).
    for init in REPO.glob("*/**/__init__.py"):
        dotted = ".".join(init.relative_to(REPO).parent.parts)
        if dotted.split(".")[0] in {p.split(".")[0] for p in packages}:
            assert dotted in packages, f"pyproject's packages.find leaves out {dotted}"
    for package in packages:
        init = package.replace(".", "/") + "/__init__.py"
        assert (REPO / init).exists(), f"pyproject lists {package}, which has no {init}"
        assert init in context, f".dockerignore leaves out {init}"
    assert not any(f.startswith((".git/", ".venv/", "var/", "tests/")) for f in context)
