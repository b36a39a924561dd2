"""Private MariaDB and RabbitMQ servers for the fault tests: ours to restart, never the shared ones.

Each runs from a temp dir on free ports, as a child of the test process in its own session. `stop()`
is a real shutdown (SIGTERM, then wait) and `start()` brings the same datadir back on the same port,
so `restart()` is what an operator's `systemctl restart` does. The context managers always stop the
server and remove its files, whatever the test did.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pymysql
import pytest
from kombu.connection import Connection as AmqpConnection
from sqlalchemy import create_engine, text

from models.migrate import upgrade
from tests.services import in_ci

_SBIN = ("/usr/sbin", "/usr/bin", "/usr/lib/rabbitmq/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def find_program(name: str) -> str:
    """The program's path, also in sbin directories that a non-login PATH leaves out; else skip (fail in CI)."""
    found = shutil.which(name) or next((str(Path(d) / name) for d in _SBIN if os.access(Path(d) / name, os.X_OK)), None)
    if found is None:
        message = f"{name} is not installed (apt-get install -y mariadb-server rabbitmq-server)"
        if in_ci():
            pytest.fail(message + " (CI=true: a missing server is a failure, not a skip)")
        pytest.skip(message)
    return found


def _wait(
    check: Callable[[], bool], *, timeout: float, what: str, proc: subprocess.Popen[bytes] | None, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the server exited with {proc.returncode}:\n{_tail(log)}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not up after {timeout}s:\n{_tail(log)}")
        time.sleep(0.1)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM the server (a clean shutdown) and wait; SIGKILL its whole session if it hangs."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


# ----------------------------------------------------------------------------- MariaDB


class PrivateMariaDB:
    """`mariadbd` on a datadir of its own, root with an empty password, on 127.0.0.1:`port`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.datadir = root / "data"
        self.log = root / "mariadbd.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._server = find_program("mariadbd")
        self._install = find_program("mariadb-install-db")

    @property
    def admin_url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}"

    def install(self) -> None:
        user = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(
            [
                self._install,
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *user,
            ],
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=120,
        )

    def start(self, timeout: float = 60.0) -> None:
        user = ["--user=root"] if os.geteuid() == 0 else []
        args = [
            self._server,
            "--no-defaults",
            *user,
            f"--datadir={self.datadir}",
            f"--socket={self.root / 'mariadbd.sock'}",
            f"--pid-file={self.root / 'mariadbd.pid'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=64M",
            f"--log-error={self.log}",
        ]
        with open(self.root / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait(self._answers, timeout=timeout, what=f"private MariaDB on port {self.port}", proc=self.proc, log=self.log)

    def stop(self, timeout: float = 60.0) -> None:
        """A clean shutdown: SIGTERM, then wait until the process is gone."""
        _terminate(self.proc, timeout)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _answers(self) -> bool:
        try:
            pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=1).close()
            return True
        except pymysql.MySQLError:
            return False

    def execute(self, sql: str) -> list[tuple[object, ...]]:
        """One statement as root, on a connection of its own (closed afterwards)."""
        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=5, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()

    def new_database(self) -> str:
        """An empty, migrated database; its URL."""
        name = f"bt_{uuid.uuid4().hex[:10]}"
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
        finally:
            engine.dispose()
        url = f"{self.admin_url}/{name}"
        upgrade(url)
        return url


@contextmanager
def private_mariadb() -> Iterator[PrivateMariaDB]:
    root = Path(tempfile.mkdtemp(prefix="bt-mariadb-"))
    server: PrivateMariaDB | None = None
    try:
        server = PrivateMariaDB(root)
        server.install()
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


# ----------------------------------------------------------------------------- RabbitMQ


class PrivateRabbitMQ:
    """`rabbitmq-server` as a node of its own: own ports, own epmd, own cookie, own mnesia dir.

    `consumer_timeout_ms`: how long the node lets a consumer hold an unacknowledged delivery before it
    closes the channel (RabbitMQ's default is 30 minutes); None keeps the default.
    """

    def __init__(self, root: Path, *, consumer_timeout_ms: int | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.nodename = f"bt_{uuid.uuid4().hex[:8]}@localhost"
        self.log = root / "log" / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # Not the /usr/sbin wrapper: as root it would `su rabbitmq` and use the system's files.
        self._server = find_program("rabbitmq-server")
        direct = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
        if direct.exists():
            self._server = str(direct)
        (root / "enabled_plugins").write_text("[].\n")
        conf = "" if consumer_timeout_ms is None else f"consumer_timeout = {consumer_timeout_ms}\n"
        (root / "rabbitmq.conf").write_text(conf)
        if consumer_timeout_ms is not None:
            # A channel looks at its consumers' deliveries on its tick, once a minute by default: tick
            # as often as the timeout, so that a delivery is timed out soon after it is due.
            tick = max(200, min(consumer_timeout_ms, 60_000))
            (root / "advanced.config").write_text(f"[{{rabbit, [{{channel_tick_interval, {tick}}}]}}].\n")
        (root / "rabbitmq-env.conf").write_text("")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def environment(self) -> dict[str, str]:
        r = self.root
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        return {
            **keep,
            "HOME": str(r),  # the Erlang cookie is made here
            "RABBITMQ_CONF_ENV_FILE": str(r / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(r / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(r / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(r / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(r / "plugins-expand"),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(r / "mnesia"),
            "RABBITMQ_LOG_BASE": str(r / "log"),
            "RABBITMQ_LOGS": str(self.log),
            "RABBITMQ_PID_FILE": str(r / "rabbitmq.pid"),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def start(self, timeout: float = 120.0) -> None:
        with open(self.root / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(
                [self._server],
                cwd=self.root,
                env=self.environment(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        what = f"private RabbitMQ on port {self.port}"
        _wait(self._answers, timeout=timeout, what=what, proc=self.proc, log=self.log)

    def stop(self, timeout: float = 60.0) -> None:
        """A clean shutdown: the foreground script turns SIGTERM into `rabbitmqctl stop`."""
        _terminate(self.proc, timeout)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _answers(self) -> bool:
        if not port_open(self.port):
            return False
        try:
            with AmqpConnection(self.url, connect_timeout=2) as conn:  # type: ignore[no-untyped-call]
                conn.ensure_connection(max_retries=1)
            return True
        except Exception:
            return False

    def kill_epmd(self) -> None:
        """The epmd our node started daemonizes on its own port: end it (never the system's epmd)."""
        epmd = shutil.which("epmd") or next(iter(sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"))), None)
        if epmd is None or not port_open(self.epmd_port):
            return
        subprocess.run(
            [str(epmd), "-port", str(self.epmd_port), "-kill"],
            env={**os.environ, "ERL_EPMD_PORT": str(self.epmd_port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )


@contextmanager
def private_rabbitmq(*, consumer_timeout_ms: int | None = None) -> Iterator[PrivateRabbitMQ]:
    root = Path(tempfile.mkdtemp(prefix="bt-rabbitmq-"))
    server: PrivateRabbitMQ | None = None
    try:
        server = PrivateRabbitMQ(root, consumer_timeout_ms=consumer_timeout_ms)
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop()
            server.kill_epmd()
        shutil.rmtree(root, ignore_errors=True)


# ----------------------------------------------------------------------------- a small filesystem


def _run(command: list[str]) -> str | None:
    """Run a command; None when it worked, else what went wrong."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    except OSError as err:
        return f"{command[0]}: {err}"
    return None if done.returncode == 0 else f"{' '.join(command)}: {done.stderr.strip()}"


@contextmanager
def small_filesystem(size_mib: int = 8) -> Iterator[Path]:
    """A directory on a filesystem of its own, `size_mib` big: a loop-mounted ext4 image, else tmpfs.

    Needs root; skips (fails in CI) when neither can be mounted. Always unmounted and removed.
    """
    root = Path(tempfile.mkdtemp(prefix="bt-smallfs-"))
    mount = root / "mnt"
    mount.mkdir()
    image = root / "fs.img"
    ways = [
        [
            ["truncate", "-s", f"{size_mib}M", str(image)],
            ["mkfs.ext4", "-q", str(image)],
            ["mount", "-o", "loop", str(image), str(mount)],
        ],
        [["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mount)]],
    ]
    mounted = False
    try:
        errors = []
        for commands in ways:
            error = next((e for e in map(_run, commands) if e is not None), None)
            if error is None:
                mounted = True
                break
            errors.append(error)
        if not mounted:
            message = f"cannot mount a small filesystem (loop or tmpfs; needs root): {errors}"
            if in_ci():
                pytest.fail(message + " (CI=true: a failure, not a skip)")
            pytest.skip(message)
        yield mount
    finally:
        if mounted and _run(["umount", str(mount)]) is not None:
            _run(["umount", "-l", str(mount)])  # still busy: detached now, freed when the last user lets go
        shutil.rmtree(root, ignore_errors=True)
