"""apptask end to end: the real task in a worker process, on the private Docker engine."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from hosting.apps.docker_engine import LABEL_APP_ID
from tasks.client import enqueue
from tests.appkit import MIB, free_port, manifest
from tests.dockerd import Dockerd
from tests.e2e.harness import Env, Worker, wait_state

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.rabbitmq, pytest.mark.docker]


def _op(app_id: str, operation: str, **options: Any) -> str:
    args = {"app_id": app_id, "operation": operation, "options": options}
    return enqueue("apptask", args, app_id=app_id)


def _container(dockerd: Dockerd, app_id: str) -> Any:
    found = dockerd.client.containers.list(all=True, filters={"label": f"{LABEL_APP_ID}={app_id}"})
    return found[0] if found else None


def test_install_configure_stop_start_uninstall_through_the_worker(
    dockerd: Dockerd, e2e_env: Env, start_worker: Callable[..., Worker]
) -> None:
    e2e_env.extra.update(BOXTASKS_DOCKER_HOST=dockerd.base_url, BOXTASKS_APP_NETWORK="none")
    start_worker(concurrency=2)
    app_id = f"app{uuid.uuid4().hex[:8]}"
    ssh = free_port()
    install = _op(
        app_id,
        "install",
        manifest=manifest(dockerd.image),
        location=f"{app_id}.example",
        ports={"SSH_PORT": ssh},
        cpuShares=300,
        cpuQuota=50,
        memoryLimit=64 * MIB,
    )
    done = wait_state(install, "succeeded", "failed", timeout=120)
    assert done.state == "succeeded", done.error
    assert done.result["installationState"] == "installed"
    host = _container(dockerd, app_id).attrs["HostConfig"]
    assert host["CpuShares"] == 300 and host["CpuQuota"] == 50000 and host["Memory"] == 64 * MIB
    assert host["PortBindings"]["2222/tcp"][0]["HostPort"] == str(ssh)

    configured = wait_state(_op(app_id, "configure", cpuShares=600), "succeeded", "failed", timeout=120)
    assert configured.state == "succeeded", configured.error
    assert _container(dockerd, app_id).attrs["HostConfig"]["CpuShares"] == 600

    stopped = wait_state(_op(app_id, "stop"), "succeeded", "failed", timeout=120)
    assert stopped.state == "succeeded", stopped.error
    assert _container(dockerd, app_id).attrs["State"]["Running"] is False
    started = wait_state(_op(app_id, "start"), "succeeded", "failed", timeout=120)
    assert started.state == "succeeded", started.error
    assert _container(dockerd, app_id).attrs["State"]["Running"] is True

    # An operation that makes no sense in this state fails with the reason, and changes nothing.
    again = wait_state(_op(app_id, "install", manifest=manifest(dockerd.image), location="x.example"), "failed")
    assert "installed" in again.error

    gone = wait_state(_op(app_id, "uninstall"), "succeeded", "failed", timeout=120)
    assert gone.state == "succeeded", gone.error
    assert _container(dockerd, app_id) is None
