"""`boxtasks`: the shell's door to the task engine. Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from sqlalchemy.exc import SQLAlchemyError

from cli import api_cmd, app_cmd, locks_cmd, platform_cmd, run_cmd, task_cmd, token_cmd
from cli.errors import CliError
from config import ConfigError, get_settings
from frontdoor.errors import FrontError
from lockman import LockError
from models import ModelError
from models.secrets import describe_db_error

logger = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]


def _db_upgrade(args: argparse.Namespace) -> int:
    from models.migrate import upgrade

    url = get_settings().effective_database_url
    upgrade(url)
    if not args.json:
        sys.stdout.write("database is up to date\n")
    else:
        sys.stdout.write('{"upgraded": true}\n')
    return 0


def build_parser() -> argparse.ArgumentParser:
    # SUPPRESS: `--json` is taken before or after the command; a subcommand that did not see it
    # must not reset what the top level saw.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")
    parser = argparse.ArgumentParser(prog="boxtasks", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    app_cmd.add_parser(sub, common)
    platform_cmd.add_parsers(sub, common)
    task_cmd.add_parser(sub, common)
    token_cmd.add_parser(sub, common)
    api_cmd.add_parser(sub, common)

    db = sub.add_parser("db", help="database schema", parents=[common])
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = db_sub.add_parser("upgrade", help="apply migrations (safe to run again)", parents=[common])
    up.set_defaults(handler=_db_upgrade)

    locks_cmd.add_parser(sub, common)

    run = sub.add_parser(
        "run", help="migrate, then run worker, beat, Flower and the API until Ctrl-C", parents=[common]
    )
    run.set_defaults(handler=run_cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (CliError, ConfigError, FrontError, LockError, ModelError) as err:
        sys.stderr.write(f"boxtasks: {err}\n")
        return err.exit_code if isinstance(err, CliError) else 1
    except SQLAlchemyError as err:
        # Never str(err): it carries the statement's parameters (the task's args, env and all).
        sys.stderr.write(f"boxtasks: database error: {describe_db_error(err)}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
