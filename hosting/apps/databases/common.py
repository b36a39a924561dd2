"""What both database servers share: an app's credentials, the names derived from its id, piping a dump.

Names are derived from the app id (sanitised, with a hash of the id so ids that differ only in case or
punctuation never meet) and checked against one pattern before any statement uses them; they are
also quoted as identifiers by each server's own quoting. Passwords are `secrets.token_urlsafe`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from hosting.errors import AddonServerError
from models.secrets import scrub

logger = logging.getLogger(__name__)

#: Every database and user name the addons make: short enough for MySQL's 32-character user names.
NAME = re.compile(r"^app_[a-z0-9_]{1,26}$")


@dataclass(frozen=True)
class Credentials:
    """One app's database on one server: what the app is handed (host and port as apps reach the server)."""

    database: str
    username: str
    password: str
    host: str
    port: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Credentials:
        creds = cls(
            database=str(config["database"]),
            username=str(config["username"]),
            password=str(config["password"]),
            host=str(config["host"]),
            port=int(config["port"]),
        )
        check_name(creds.database)
        check_name(creds.username)
        return creds

    def as_config(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "username": self.username,
            "password": self.password,
            "host": self.host,
            "port": self.port,
        }


def name_for(app_id: str) -> str:
    """The database (and user, and role) name of an app: `app_<id, sanitised>_<8 hex of its hash>`."""
    base = re.sub(r"[^a-z0-9]+", "_", app_id.lower()).strip("_")[:16]
    digest = hashlib.sha256(app_id.encode()).hexdigest()[:8]
    return check_name(f"app_{base}_{digest}" if base else f"app_{digest}")


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise AddonServerError(f"refusing database name {name!r}: not one the platform makes ({NAME.pattern})")
    return name


def new_password() -> str:
    return secrets.token_urlsafe(24)


def pipe(
    dump: list[str] | Path,
    load: list[str] | Path,
    *,
    dump_env: Mapping[str, str] | None = None,
    load_env: Mapping[str, str] | None = None,
    rewrite: Callable[[bytes], bytes] | None = None,
    hide: tuple[str, ...] = (),
    what: str,
) -> None:
    """Run `dump | load`, each line through `rewrite`; a failure of either is an AddonServerError with its stderr.

    Either end may be a file instead of a command (a dump kept in a backup, made private: 0600).
    Passwords go in the environment or a private file, never on a command line; `hide` are scrubbed
    out of the stderr quoted in the error all the same.
    """
    with ExitStack() as stack:
        if rewrite is None and (isinstance(dump, Path) or isinstance(load, Path)):
            # A file at one end and nothing to rewrite: the tool reads or writes the file itself, and
            # not one byte passes through Python (a dump of any size streams at the tool's own pace).
            if isinstance(dump, Path) and isinstance(load, Path):
                raise ValueError("pipe: at least one end must be a command")
            if isinstance(load, Path):
                assert not isinstance(dump, Path)
                out = stack.enter_context(_private_file(load))
                tool = _start(stack, dump, dump_env, what, stdout=out)
            else:
                assert isinstance(dump, Path)
                src = stack.enter_context(dump.open("rb"))
                tool = _start(stack, load, load_env, what, stdin=src)
            _check([tool], hide, what)
            return
        running: list[tuple[subprocess.Popen[bytes], str, BinaryIO]] = []
        source: IO[bytes]
        sink: IO[bytes]
        if isinstance(dump, Path):
            source = stack.enter_context(dump.open("rb"))
        else:
            producer = _start(stack, dump, dump_env, what, stdout=subprocess.PIPE)
            running.append(producer)
            assert producer[0].stdout is not None
            source = producer[0].stdout
        try:
            if isinstance(load, Path):
                sink = stack.enter_context(_private_file(load))
            else:
                consumer = _start(stack, load, load_env, what, stdin=subprocess.PIPE)
                running.append(consumer)
                assert consumer[0].stdin is not None
                sink = consumer[0].stdin
        except BaseException:
            for proc, _, _ in running:
                proc.kill()
                proc.wait()
            raise
        try:
            for line in source:  # one line at a time: a dump is never held whole in memory
                sink.write(rewrite(line) if rewrite else line)
        except BrokenPipeError:
            pass  # the loader gave up: its stderr says why
        finally:
            with contextlib.suppress(BrokenPipeError):  # closing flushes what the loader will never read
                sink.close()
            source.close()  # a dumper still writing then ends on SIGPIPE
        _check(running, hide, what)


def _private_file(path: Path) -> IO[bytes]:
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


def _check(running: list[tuple[subprocess.Popen[bytes], str, BinaryIO]], hide: tuple[str, ...], what: str) -> None:
    failed = [(code, tool, err) for code, tool, err in ((p.wait(), t, e) for p, t, e in running) if code != 0]
    # A dumper ended by SIGPIPE only says that its loader gave up first: the loader's stderr says why.
    failed.sort(key=lambda f: f[0] == -signal.SIGPIPE)
    if failed:
        code, tool, err_file = failed[0]
        raise AddonServerError(f"cannot {what}: {tool} exited {code}: {_first_lines(err_file, hide)}")


def _start(
    stack: ExitStack, cmd: list[str], env: Mapping[str, str] | None, what: str, **pipes: Any
) -> tuple[subprocess.Popen[bytes], str, BinaryIO]:
    err_file = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 (closed by the stack)
    try:
        proc = subprocess.Popen(cmd, stderr=err_file, env=dict(env or {}), **pipes)
    except OSError as err:
        raise AddonServerError(f"cannot {what}: {cmd[0]} cannot run ({err.strerror}); install it") from err
    return proc, cmd[0], err_file


def _first_lines(err_file: BinaryIO, hide: tuple[str, ...]) -> str:
    err_file.seek(0)
    text = err_file.read(4000).decode(errors="replace").strip()
    return str(scrub(" / ".join(text.splitlines()[:3]), hide)) or "no message"
