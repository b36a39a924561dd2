"""Flower never serves an open UI: `celery -A tasks flower` with no authentication refuses to start.

Flower reads its options from the command line, from `FLOWER_<OPTION>` environment variables and
from its config file; the password belongs in the environment (`FLOWER_BASIC_AUTH=user:password`),
never on the command line, where `/proc/<pid>/cmdline` shows it to every local user. Flower imports
the app's modules once its options are parsed (`Flower.__init__` calls the loader's
`import_default_modules`, which sends Celery's `import_modules` signal): that is where this check runs.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

logger = logging.getLogger(__name__)

#: Set to 1 to serve Flower without authentication on purpose (behind a proxy that authenticates).
UNSAFE_ENV = "BOXTASKS_FLOWER_UNSAFE_NO_AUTH"

REFUSAL = (
    "boxtasks: Flower has no authentication; set FLOWER_BASIC_AUTH=user:password in its environment "
    f"(not --basic-auth on the command line), or {UNSAFE_ENV}=1 if a proxy in front of it authenticates"
)


def refuse_open_flower(sender: Any = None, **_: Any) -> None:
    """`import_modules` handler: exit with one line when this process is Flower and has no auth."""
    if not _running_flower():
        return
    from tornado.options import options

    if options.basic_auth or options.auth:
        return
    if os.environ.get(UNSAFE_ENV) == "1":
        logger.warning("Flower serves without authentication (%s=1)", UNSAFE_ENV)
        return
    sys.exit(REFUSAL)


def _running_flower() -> bool:
    """Whether the `celery` command being run is `flower` (worker and beat send the signal too)."""
    import click

    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.command.name == "flower"
