"""What counts as a secret, and how it is hidden: one rule for every read view, log line and task message.

A secret is every value of an app's env (under a key named `env`), and the value of any key whose
name says password, passphrase, secret, token or key (`DB_PASSWORD`, `apiKey`, a mail addon's
`password`). `redact` replaces each with `MARKER`, keeping the keys, so a reader sees which names
are set but not their values; it then scrubs the secret values it found (and any the caller knows,
`known_secrets`) out of every other string of the document: an error or a message that quoted one.

The database keeps the real values (the worker reads a task's args from its row): it is the record,
not a view. Here, below `hosting`, so the API, the CLI and the task client share it without
importing the worker's code.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, select

from models.app import App, AppAddon

#: What a secret value reads as in every view.
MARKER = "***"
#: Keys whose value maps env names to values: every value is a secret.
_ENV_KEYS = frozenset({"env", "environment", "addonenv"})
#: Words of a key name that make its value a secret (`DB_PASSWORD`, `apiKey`, `smtp_pass`).
_SECRET_WORDS = frozenset({"pass", "passwd", "pwd", "password", "passphrase", "secret", "token", "key", "credentials"})
#: Parts that make a key secret wherever they appear in its name (`dbpassword`, `clientsecret`).
_SECRET_PARTS = ("password", "passwd", "passphrase", "secret", "token", "apikey", "privatekey")
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
#: Shorter values are not scrubbed out of free text (a 1-3 character "secret" would garble every message).
_MIN_SCRUB = 4
#: An env value under a name that does not say secret is scrubbed out of free text only from this
#: length on: long values (URLs with credentials, generated keys) are worth hiding everywhere, short
#: ones (`production`, `info`) would garble messages that merely use the same word.
_MIN_SCRUB_ENV = 12
#: A quoted literal in a database's error text (`Duplicate entry 'x'`); not an apostrophe inside a word.
_QUOTED = re.compile(r"(?<![A-Za-z0-9])'[^']*'|\"[^\"]*\"")


def is_secret_name(name: str) -> bool:
    """Whether a key's name says its value is a secret."""
    lowered = name.lower()
    if any(part in lowered for part in _SECRET_PARTS):
        return True
    return any(word.lower() in _SECRET_WORDS for word in _WORD.findall(name))


def redact(value: Any, *, known: Iterable[str] = ()) -> Any:
    """A copy of `value` (JSON-like) with every secret replaced by `MARKER`, keys kept.

    The secrets found, and `known` ones, are then replaced in every string of the copy.
    """
    found: set[str] = {s for s in known if len(s) >= _MIN_SCRUB}
    masked = _mask(value, found, secret=False)
    return scrub(masked, found) if found else masked


def secret_values(value: Any) -> set[str]:
    """The secret values in `value` that free text must not show (see `redact`)."""
    found: set[str] = set()
    _mask(value, found, secret=False)
    return found


def scrub(value: Any, secrets: Iterable[str]) -> Any:
    """`value` with each of `secrets` replaced by `MARKER` in its strings (keys are names: left alone)."""
    ordered = sorted({s for s in secrets if len(s) >= _MIN_SCRUB}, key=len, reverse=True)
    if not ordered:
        return value
    return _scrub(value, ordered)


def is_masked(value: Any) -> bool:
    """Whether `value` holds a `MARKER` (a task message whose args were redacted)."""
    if isinstance(value, Mapping):
        return any(is_masked(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(is_masked(v) for v in value)
    return isinstance(value, str) and value == MARKER


def known_secrets(conn: Connection) -> set[str]:
    """The secrets the box holds now (apps' env, addon credentials): scrubbed from free text that quotes one."""
    found: set[str] = set()
    for (env,) in conn.execute(select(App.env)):
        _mask({"env": env or {}}, found, secret=False)
    for (config,) in conn.execute(select(AppAddon.config)):
        _mask(config or {}, found, secret=False)
    return found


def describe_db_error(err: BaseException) -> str:
    """A database error without its statement, its parameters or any literal its text quotes.

    `str()` of a SQLAlchemy error carries the statement's parameters (a task's args, env and all),
    and a driver's text may quote a value (MySQL's `Duplicate entry '...'`): neither goes to a log,
    an error body or a terminal. What is left: the driver's error class, its code, its words.
    """
    orig = getattr(err, "orig", None) or err
    args = getattr(orig, "args", ())
    code: object = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    text = ""
    if args and isinstance(args[0], int):
        code = args[0]
        text = str(args[1]) if len(args) > 1 else ""
    elif args:
        text = str(args[0])
    lines = text.strip().splitlines()
    words = _QUOTED.sub("'…'", lines[0] if lines else "")[:200]
    return type(orig).__name__ + (f" ({code})" if code else "") + (f": {words}" if words else "")


def where(err: BaseException, *, frames: int = 6) -> str:
    """The last `frames` frames of `err`'s traceback, without any exception's message (which may quote data)."""
    return "".join(traceback.format_tb(err.__traceback__)[-frames:]).rstrip()


def _mask(value: Any, found: set[str], *, secret: bool, min_scrub: int = _MIN_SCRUB) -> Any:
    """Mask the secrets of `value`; collect into `found` those at least `min_scrub` long.

    Under a secret name only strings are masked: a number is a port or a count, and a mapping is
    judged key by key (`{"TOKEN_PORT": {"hostPort": 2222}}` keeps its port). Every value of an env
    is masked, whatever its type.
    """
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            name = str(key)
            if name.lower() in _ENV_KEYS and isinstance(item, Mapping):
                out[key] = {k: _env_value(v, found, str(k)) for k, v in item.items()}
            else:
                out[key] = _mask(item, found, secret=is_secret_name(name), min_scrub=min_scrub)
        return out
    if isinstance(value, list | tuple):
        return [_mask(item, found, secret=secret, min_scrub=min_scrub) for item in value]
    if secret and isinstance(value, str):
        if len(value) >= min_scrub:
            found.add(value)
        return MARKER
    return value


def _env_value(value: Any, found: set[str], name: str) -> Any:
    min_scrub = _MIN_SCRUB if is_secret_name(name) else _MIN_SCRUB_ENV
    if value is None or isinstance(value, Mapping | list | tuple):
        return _mask(value, found, secret=True, min_scrub=min_scrub)
    return _mask(str(value), found, secret=True, min_scrub=min_scrub)


def _scrub(value: Any, ordered: list[str]) -> Any:
    if isinstance(value, str):
        for secret in ordered:
            if secret in value:
                value = value.replace(secret, MARKER)
        return value
    if isinstance(value, Mapping):
        return {k: _scrub(v, ordered) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, ordered) for v in value]
    return value
