"""A private Docker engine for the tests: started in a temp dir, with a busybox test image, stopped after.

No bridge, no iptables, no routes: containers run with network_mode="none". The test image is a
root filesystem holding static busybox and a small `/bin/app.sh` (sleeps until SIGTERM; with
HOG_MB set it first allocates that many MiB, to provoke an OOM kill under a small memory limit; with
SERVE_HTTP set it serves /healthz on its httpPort, for the health check).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.services import in_ci

logger = logging.getLogger(__name__)

TEST_IMAGE = "boxtasks-test/busybox:1.0.0"
APPLETS = ("sh", "sleep", "cat", "echo", "ls", "dd", "env", "head", "httpd", "id", "mkdir", "touch", "true", "wget")
APP_SCRIPT = b"""#!/bin/sh
trap 'exit 0' TERM INT
if [ -n "$HOG_MB" ]; then dd if=/dev/zero of=/dev/null bs="${HOG_MB}M" count=1; fi
if [ -n "$SERVE_HTTP" ]; then
  mkdir -p /tmp/www && echo ok > /tmp/www/healthz && httpd -p "$BOX_HTTP_PORT" -h /tmp/www
fi
while :; do sleep 1 & wait $!; done
"""


@dataclass
class Dockerd:
    base_url: str
    client: Any  # docker.DockerClient
    image: str
    root: Path


def _missing(what: str) -> None:
    message = f"{what}; install with: apt-get install -y docker.io busybox-static"
    if in_ci():
        pytest.fail(message + " (CI=true: a missing Docker engine is a failure, not a skip)")
    pytest.skip(message)


def _rootfs_tar(busybox: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("bin", "tmp", "app", "etc"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        script = tarfile.TarInfo("bin/app.sh")
        script.size, script.mode = len(APP_SCRIPT), 0o755
        tar.addfile(script, io.BytesIO(APP_SCRIPT))
        passwd = b"root:x:0:0:root:/:/bin/sh\n"
        entry = tarfile.TarInfo("etc/passwd")
        entry.size = len(passwd)
        tar.addfile(entry, io.BytesIO(passwd))
    return buf.getvalue()


def _is_static(path: Path) -> bool:
    with contextlib.suppress(OSError):
        out = subprocess.run(["file", "-L", str(path)], capture_output=True, text=True, timeout=10).stdout
        return "statically linked" in out or "static-pie" in out
    return True  # no `file` tool: trust busybox-static


def build_test_image(client: Any, image: str = TEST_IMAGE) -> str:
    busybox = shutil.which("busybox")
    if busybox is None or not _is_static(Path(busybox).resolve()):
        _missing("no static busybox on PATH")
    repository, tag = image.rsplit(":", 1)
    with tempfile.NamedTemporaryFile(suffix=".tar") as tar:
        tar.write(_rootfs_tar(Path(str(busybox)).resolve()))
        tar.flush()
        client.api.import_image(src=tar.name, repository=repository, tag=tag, changes=['CMD ["/bin/app.sh"]'])
    return image


@contextlib.contextmanager
def running_dockerd(*, start_timeout: float = 60.0) -> Iterator[Dockerd]:
    """Start dockerd in a fresh temp dir, yield it with the test image built, stop and clean up after."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        _missing("dockerd is not installed")
    if os.geteuid() != 0:
        _missing("dockerd needs root")
    import docker

    # Short paths: a unix socket path must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="btd-", dir="/tmp"))
    sock = root / "d.sock"
    log_path = root / "dockerd.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            str(dockerd),
            "--storage-driver=vfs",
            "--iptables=false",
            "--bridge=none",
            "--ip-forward=false",
            "--ip-masq=false",
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "x"),
            "--pidfile",
            str(root / "d.pid"),
            "-H",
            f"unix://{sock}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    base_url = f"unix://{sock}"
    client = None
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {proc.returncode}:\n{_tail(log_path)}")
            if sock.exists():
                try:
                    client = docker.DockerClient(base_url=base_url, version="auto", timeout=120)
                    client.ping()
                    break
                except docker.errors.DockerException:
                    client = None
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not answer within {start_timeout}s:\n{_tail(log_path)}")
            time.sleep(0.1)
        image = build_test_image(client)
        yield Dockerd(base_url=base_url, client=client, image=image, root=root)
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                for container in client.containers.list(all=True):
                    container.remove(force=True)
            client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""
