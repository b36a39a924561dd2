"""The Docker engine, as app operations use it: images, app containers, limits, events.

A thin wrapper over the docker SDK so that every Docker failure becomes a `hosting.errors.EngineError`
that names what failed and what to do. The client is made on first use, never at import.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from hosting.apps.resources import HostCapacity
from hosting.errors import ContainerError, EngineError, EngineUnavailableError, ImageError

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

logger = logging.getLogger(__name__)

#: Every container boxtasks makes for an app carries these labels.
LABEL_MANAGED = "boxtasks.managed"
LABEL_APP_ID = "boxtasks.app_id"
LABEL_MANIFEST_ID = "boxtasks.manifest_id"
LABEL_VERSION = "boxtasks.app_version"
LABEL_LOCATION = "boxtasks.location"
LABEL_TASK_ID = "boxtasks.task_id"


def container_name(app_id: str) -> str:
    return f"boxtasks-app-{app_id}"


class DockerEngine:
    """One Docker engine at `base_url` (e.g. unix:///var/run/docker.sock)."""

    def __init__(self, base_url: str, *, timeout: float = 120.0) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._client: docker.DockerClient | None = None
        self._pid = 0

    @property
    def client(self) -> docker.DockerClient:
        if self._client is not None and self._pid != os.getpid():
            self._client = None  # made before a fork: its pooled sockets belong to the parent
        if self._client is None:
            import docker

            try:
                self._client = docker.DockerClient(base_url=self.base_url, version="auto", timeout=int(self.timeout))
                self._pid = os.getpid()
            except docker.errors.DockerException as err:
                raise EngineUnavailableError(
                    f"cannot reach Docker at {self.base_url}: {err}; is dockerd running, "
                    "and does BOXTASKS_DOCKER_HOST point at its socket?"
                ) from err
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ------------------------------------------------------------------ host

    def capacity(self) -> HostCapacity:
        """CPUs and memory of the Docker host (the bounds of cpuQuota and memoryLimit)."""
        info = self._call("read the Docker host's CPUs and memory", lambda: self.client.info())
        return HostCapacity(ncpu=int(info["NCPU"]), memory=int(info["MemTotal"]))

    # ------------------------------------------------------------------ images

    def ensure_image(self, image: str) -> None:
        """Use the image if it is here, else pull it; ImageError says which image and why not."""
        import docker
        from docker.utils import parse_repository_tag

        try:
            self.client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.DockerException as err:
            raise _engine_error(f"look up image {image}", err) from err
        repository, tag = parse_repository_tag(image)
        logger.info("pulling image %s", image)
        try:
            _log_pull(image, self.client.api.pull(repository, tag=tag or "latest", stream=True, decode=True))
        except docker.errors.DockerException as err:
            reason = _reason(err)
            raise ImageError(
                f"image {image} is not on this server and pulling it failed: {reason}; check the image name "
                "in the manifest and that its registry is reachable, or load the image with `docker load`",
                image=image,
            ) from err
        except Exception as err:  # requests' connection errors and timeouts
            raise ImageError(f"pulling image {image} failed: {err}", image=image) from err

    # ------------------------------------------------------------------ containers

    def app_containers(self, app_id: str) -> list[Container]:
        """Every container labelled as this app's, running or not."""
        found: list[Container] = self._call(
            f"list the containers of app {app_id}",
            lambda: self.client.containers.list(all=True, filters={"label": f"{LABEL_APP_ID}={app_id}"}),
        )
        return found

    def remove_app_containers(self, app_id: str, *, stop_timeout: int) -> int:
        """Stop and remove every container of the app; how many there were."""
        import docker

        containers = self.app_containers(app_id)
        for container in containers:
            try:
                if container.status == "running":
                    container.stop(timeout=stop_timeout)
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                continue
            except docker.errors.DockerException as err:
                raise _container_error(f"remove container {container.short_id} of app {app_id}", err) from err
        return len(containers)

    def remove_container(self, ref: str, *, stop_timeout: int) -> bool:
        """Stop and remove one container by id or name; False when there was none."""
        import docker

        try:
            container = self.client.containers.get(ref)
        except docker.errors.NotFound:
            return False
        except docker.errors.DockerException as err:
            raise _engine_error(f"look up container {ref}", err) from err
        try:
            if container.status == "running":
                container.stop(timeout=stop_timeout)
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            return False
        except docker.errors.DockerException as err:
            raise _container_error(f"remove container {ref}", err) from err
        return True

    def rename(self, container_id: str, name: str) -> None:
        self._call(
            f"rename container {container_id[:12]} to {name}",
            lambda: self.client.api.rename(container_id, name),
            container=True,
        )

    def create(self, spec: dict[str, Any]) -> Container:
        return self._call(
            f"create container {spec.get('name')}", lambda: self.client.containers.create(**spec), container=True
        )

    def start(self, container_id: str) -> None:
        self._call(f"start container {container_id[:12]}", lambda: self.client.api.start(container_id), container=True)

    def stop(self, container_id: str, *, timeout: int) -> None:
        self._call(
            f"stop container {container_id[:12]}",
            lambda: self.client.api.stop(container_id, timeout=timeout),
            container=True,
        )

    def restart(self, container_id: str, *, timeout: int) -> None:
        self._call(
            f"restart container {container_id[:12]}",
            lambda: self.client.api.restart(container_id, timeout=timeout),
            container=True,
        )

    def exec_probe(self, container_id: str, argv: list[str]) -> tuple[int, str]:
        """Run a short command inside the running container: (exit code, stdout and stderr together)."""
        chunks: list[bytes] = []
        code = self.exec_run(container_id, argv, on_output=chunks.append)
        return code, b"".join(chunks).decode("utf-8", "replace")

    def update_limits(self, container_id: str, limits: dict[str, Any]) -> None:
        """Change CPU and memory limits of a container in place, without a restart."""
        self._call(
            f"change the limits of container {container_id[:12]}",
            lambda: self.client.api.update_container(container_id, **limits),
            container=True,
        )

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        """`docker inspect`, or None when there is no such container."""
        import docker

        try:
            result: dict[str, Any] = self.client.api.inspect_container(container_id)
            return result
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as err:
            raise _engine_error(f"inspect container {container_id[:12]}", err) from err

    def exec_run(self, container_id: str, cmd: list[str], *, on_output: Callable[[bytes], None]) -> int:
        """Run `cmd` in the running container (`docker exec`), its stdout and stderr handed to `on_output`
        as they come; its exit code. The command inherits the container's environment and user."""
        what = f"run a command in container {container_id[:12]}"
        exec_id = self._call(
            what, lambda: self.client.api.exec_create(container_id, cmd, stdout=True, stderr=True), container=True
        )["Id"]
        stream = self._call(what, lambda: self.client.api.exec_start(exec_id, stream=True), container=True)
        self._call(what, lambda: _drain(stream, on_output), container=True)  # Docker failing mid-stream: wrapped
        inspected = self._call(what, lambda: self.client.api.exec_inspect(exec_id), container=True)
        code = inspected.get("ExitCode")
        if code is None:  # the stream ended but the process has not been reaped yet
            code = self._exit_code_when_done(exec_id, what)
        return int(code)

    def _exit_code_when_done(self, exec_id: str, what: str, *, seconds: float = 10.0) -> int:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            inspected = self._call(what, lambda: self.client.api.exec_inspect(exec_id), container=True)
            if not inspected.get("Running") and inspected.get("ExitCode") is not None:
                return int(inspected["ExitCode"])
            time.sleep(0.1)
        raise ContainerError(f"cannot {what}: its output ended but Docker gave no exit code within {seconds:g}s")

    def events(self, *, filters: dict[str, Any], since: float | None, until: float | None) -> Iterator[dict[str, Any]]:
        """The engine's event stream (a closable generator), decoded."""
        return self._call(  # type: ignore[no-any-return]
            "follow Docker events",
            lambda: self.client.api.events(filters=filters, since=since, until=until, decode=True),
        )

    # ------------------------------------------------------------------ errors

    def _call(self, what: str, fn: Any, *, container: bool = False) -> Any:
        import docker
        import requests

        try:
            return fn()
        except docker.errors.DockerException as err:
            raise (_container_error(what, err) if container else _engine_error(what, err)) from err
        except requests.RequestException as err:
            raise EngineUnavailableError(
                f"cannot {what}: Docker at {self.base_url} did not answer ({err}); is dockerd running?"
            ) from err


def _drain(stream: Iterator[bytes], on_output: Callable[[bytes], None]) -> None:
    for chunk in stream:
        on_output(chunk)


#: Pull statuses that repeat for every chunk of every layer: not worth a line each.
_PULL_PROGRESS = {"Downloading", "Extracting", "Waiting", "Verifying Checksum"}


def _log_pull(image: str, events: Iterator[dict[str, Any]]) -> None:
    """Log what the engine says while it pulls (a task keeps these lines in its log); raise on its error."""
    import docker

    for event in events:
        if "error" in event:
            raise docker.errors.APIError(str(event.get("error")))
        status = str(event.get("status", ""))
        if not status or status in _PULL_PROGRESS:
            continue
        layer = event.get("id")
        logger.info("pull %s: %s%s", image, f"{layer}: " if layer else "", status)


def _reason(err: Exception) -> str:
    explanation = getattr(err, "explanation", None)
    return str(explanation or err).strip()


def _engine_error(what: str, err: Exception) -> EngineError:
    return EngineError(f"cannot {what}: {_reason(err)}")


def _container_error(what: str, err: Exception) -> ContainerError:
    return ContainerError(f"cannot {what}: {_reason(err)}; see `docker logs` or run repair")
