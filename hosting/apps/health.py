"""An app is running only once it answers: its manifest's `healthCheckPath`, 2xx, within the setting's time.

Checked from where the platform reaches the app: over the app network at the container's address
when it has one, else (a container with no network, as in the tests) from inside the container's
own network namespace, by `curl` or `wget` run in it with `docker exec`; an image with neither
cannot be checked that way, and says so. A manifest that names no healthCheckPath (the format
requires one; boxtasks' own test manifests leave it out) is not waited for.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from typing import Any

from hosting.apps.manifest import Manifest
from hosting.box import Box
from hosting.context import TaskContext
from hosting.errors import HealthError

logger = logging.getLogger(__name__)

#: Between two probes; each probe gives the app this long to answer.
INTERVAL_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 5
#: What `docker exec` answers when the command is not in the image.
_NOT_FOUND = (126, 127)


def wait_healthy(ctx: TaskContext, box: Box, container_id: str, manifest: Manifest, *, percent: int) -> None:
    """Return once the app answers 2xx; HealthError (saying what it last answered) when time runs out."""
    timeout = box.settings.app_health_timeout_seconds
    if timeout <= 0 or "health_check_path" not in manifest.model_fields_set:
        return
    what = f"GET {manifest.health_check_path} on port {manifest.http_port}"
    ctx.progress(percent, f"Waiting for the app to answer {what}")
    deadline = time.monotonic() + timeout
    while True:
        info = box.docker.inspect(container_id) or {}
        state = info.get("State", {})
        ok, last = _probe(box, container_id, info, manifest) if state.get("Running") else (False, "")
        if ok:
            logger.info("app container %s answers %s: %s", container_id[:12], what, last)
            return
        if not state.get("Running"):
            raise HealthError(
                f"the app's container stopped (exit code {state.get('ExitCode')}) before it answered {what}"
            )
        if time.monotonic() >= deadline:
            raise HealthError(f"the app did not answer {what} with 2xx within {timeout:g}s (last: {last})")
        ctx.progress(percent, f"Waiting for the app to answer {what} (last: {last})")
        time.sleep(INTERVAL_SECONDS)


def _probe(box: Box, container_id: str, info: dict[str, Any], manifest: Manifest) -> tuple[bool, str]:
    address = _address(info)
    path = manifest.health_check_path
    if address:
        return _http(f"http://{address}:{manifest.http_port}{path}")
    return _inside(box, container_id, f"http://127.0.0.1:{manifest.http_port}{path}")


def _address(info: dict[str, Any]) -> str | None:
    networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
    for network in networks.values():
        if network and network.get("IPAddress"):
            return str(network["IPAddress"])
    return None


def _http(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_SECONDS) as answer:
            return 200 <= answer.status < 300, f"HTTP {answer.status}"
    except urllib.error.HTTPError as err:
        return False, f"HTTP {err.code}"
    except (OSError, ValueError) as err:
        return False, f"no answer ({err})"


def _inside(box: Box, container_id: str, url: str) -> tuple[bool, str]:
    """Probe from inside the container: curl if the image has it, else wget (busybox's included)."""
    seconds = str(PROBE_TIMEOUT_SECONDS)
    code, out = box.docker.exec_probe(
        container_id, ["curl", "-s", "-o", "/dev/null", "-m", seconds, "-w", "%{http_code}", url]
    )
    if code not in _NOT_FOUND and "executable file not found" not in out:
        status = out.strip()[-3:]
        return status.startswith("2"), f"HTTP {status}" if status.isdigit() and status != "000" else "no answer"
    # No -T: busybox's static build crashes on it; a wget that hangs ends at the Docker client's timeout.
    code, out = box.docker.exec_probe(container_id, ["wget", "-q", "-O", "/dev/null", url])
    if code in _NOT_FOUND or "executable file not found" in out:
        return False, "the image has neither curl nor wget to check it from inside, and the container has no network"
    lines = out.strip().splitlines()
    return code == 0, "HTTP 2xx" if code == 0 else (lines[-1] if lines else f"wget exited {code}")
