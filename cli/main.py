"""`boxtasks`: the shell's door to the task engine. Errors are one line on stderr and a non-zero exit.

Startup is kept short: `COMMANDS` names each command and its module, and only the module of the
command on the line is imported (its own imports are what that command needs); the others get a
bare entry with their one-line help. `boxtasks --help` imports no module of the engine at all.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from cli.errors import CliError

logger = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]


class Command(NamedTuple):
    """A top-level command: the module that adds its parser (`None`: this module), and its help line."""

    module: str | None
    adder: str
    help: str


#: Every top-level command in the order `--help` lists them; tests/integration/test_cli_startup.py checks this
#: table against the parsers the modules add.
COMMANDS: dict[str, Command] = {
    "app": Command("cli.app_cmd", "add_parser", "install, configure, start, stop, ... apps"),
    "platform": Command("cli.platform_cmd", "add_parsers", "full backup, platform update, platform start"),
    "backup": Command("cli.platform_cmd", "add_parsers", "list and show backups"),
    "task": Command("cli.task_cmd", "add_parser", "list, show, watch, wait for and stop tasks"),
    "token": Command("cli.token_cmd", "add_parser", "API tokens"),
    "api": Command("cli.api_cmd", "add_parser", "serve the REST API (uvicorn)"),
    "db": Command(None, "_add_db", "database schema"),
    "locks": Command("cli.locks_cmd", "add_parser", "lock holders and waiters, and why they wait"),
    "run": Command(None, "_add_run", "migrate, then run worker, beat, Flower and the API until Ctrl-C"),
}


def _db_upgrade(args: argparse.Namespace) -> int:
    from config import get_settings
    from models.migrate import upgrade

    url = get_settings().effective_database_url
    upgrade(url)
    if not args.json:
        sys.stdout.write("database is up to date\n")
    else:
        sys.stdout.write('{"upgraded": true}\n')
    return 0


def _run(args: argparse.Namespace) -> int:
    from cli import run_cmd

    return run_cmd.run(args)


def _add_db(sub: Any, common: argparse.ArgumentParser) -> None:
    db = sub.add_parser("db", help=COMMANDS["db"].help, parents=[common])
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = db_sub.add_parser("upgrade", help="apply migrations (safe to run again)", parents=[common])
    up.set_defaults(handler=_db_upgrade)


def _add_run(sub: Any, common: argparse.ArgumentParser) -> None:
    run = sub.add_parser("run", help=COMMANDS["run"].help, parents=[common])
    run.set_defaults(handler=_run)


def build_parser(argv: Sequence[str] | None = None, *, full: bool = False) -> argparse.ArgumentParser:
    """The parser for `argv`: the command named there in full, every other one as its help line only
    (`full`: every command in full, for tests and docs)."""
    # SUPPRESS: `--json` is taken before or after the command; a subcommand that did not see it
    # must not reset what the top level saw.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")
    parser = argparse.ArgumentParser(
        prog="boxtasks", description=__doc__.split("\n", 1)[0] if __doc__ else None, parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = _command_in(sys.argv[1:] if argv is None else argv)
    # A module that adds several commands (cli.platform_cmd) adds them all, at the first one's place.
    loading = {(c.module, c.adder) for name, c in COMMANDS.items() if full or name == wanted}
    for name, command in COMMANDS.items():
        if name in sub.choices:
            continue  # added with an earlier command of its module
        if (command.module, command.adder) in loading:
            with _no_collection():
                owner = sys.modules[__name__] if command.module is None else importlib.import_module(command.module)
            getattr(owner, command.adder)(sub, common)
        else:
            sub.add_parser(name, help=command.help)
    return parser


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    """No garbage collection while a command's modules are imported: they make tens of thousands of
    objects that all live on, and the collections they set off find nothing to free (~40 ms of
    `task list` on the bench machine)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _command_in(argv: Sequence[str]) -> str | None:
    """The command word of `argv`: the first word that is not an option (no top-level option takes a value)."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command of `argv`; `None` is the `boxtasks` program itself: the command line is
    `sys.argv` and the process ends once this returns (see the end)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        try:
            code = _dispatch(argv)
        finally:  # also after `--help` (a SystemExit): a reader gone away is met here, not at exit
            sys.stdout.flush()
    except BrokenPipeError:
        return _reader_went_away()
    if argv is None:
        # The process exits next: the interpreter's last collection would walk every object the
        # imports made, for nothing (~150 ms of a 700 ms `task list` on the bench machine). Frozen
        # objects are still torn down with their modules; the collector just skips them.
        gc.freeze()
    return code


def _dispatch(argv: Sequence[str] | None) -> int:
    args = build_parser(argv).parse_args(argv)
    args.json = getattr(args, "json", False)
    handler: Handler = args.handler
    try:
        return handler(args)
    except BrokenPipeError:
        raise
    except Exception as err:
        message = _one_line(err)
        if message is None:
            raise
        sys.stderr.write(f"boxtasks: {message}\n")
        return err.exit_code if isinstance(err, CliError) else 1


def _one_line(err: Exception) -> str | None:
    """The line the user sees for an error the commands expect, `None` for a bug (its traceback is shown).

    The error classes are imported here, on the error path: a command that never touched the
    database must not load SQLAlchemy to say that `--limit` is out of range."""
    if isinstance(err, CliError):
        return str(err)
    from config import ConfigError
    from frontdoor.errors import FrontError

    if isinstance(err, ConfigError | FrontError):
        return str(err)
    if "sqlalchemy" not in sys.modules:  # none of the errors below can have been raised without it
        return None
    from sqlalchemy.exc import SQLAlchemyError

    from lockman import LockError
    from models import ModelError
    from models.secrets import describe_db_error

    if isinstance(err, LockError | ModelError):
        return str(err)
    if isinstance(err, SQLAlchemyError):
        # Never str(err): it carries the statement's parameters (the task's args, env and all).
        return f"database error: {describe_db_error(err)}"
    return None


def _reader_went_away() -> int:
    """`boxtasks task list | head -1`: the reader closed the pipe. Stop quietly, with the status a
    process killed by SIGPIPE shows in the shell (128 + 13 = 141, as `ls | head` under `pipefail`).

    stdout goes to /dev/null first so that the interpreter's own flush at exit meets no pipe
    (the recipe of the `signal` module's documentation)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
