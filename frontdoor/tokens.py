"""API tokens: made once, shown once, kept as SHA-256 hashes.

A token is 32 random bytes (`secrets.token_urlsafe(32)`) behind a `btk_` prefix. A slow password hash
(bcrypt, scrypt, argon2) protects secrets people choose, which are guessable; a 256-bit random secret
is not, so one SHA-256 is as safe as a slow hash here and costs microseconds per request instead of
tens of milliseconds. The hash is the lookup key (unique index), so no token is compared by a loop
in Python, and a leaked table reveals no usable token.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from frontdoor.errors import BadRequestError, MissingError
from models import ApiToken, db_utcnow

PREFIX = "btk_"
#: Each scope includes the ones before it.
SCOPES = ("read", "write", "admin")
#: `last_used_at` is written at most this often per token (a write per request would be wasteful).
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    name: str
    scopes: tuple[str, ...]

    def allows(self, scope: str) -> bool:
        return allows(self.scopes, scope)


def allows(granted: Iterable[str], needed: str) -> bool:
    rank = {s: i for i, s in enumerate(SCOPES)}
    return any(rank.get(s, -1) >= rank[needed] for s in granted)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_scopes(scopes: Iterable[str]) -> list[str]:
    chosen = sorted(set(scopes), key=SCOPES.index) if set(scopes) <= set(SCOPES) else None
    if not chosen:
        raise BadRequestError(f"scopes must be some of {', '.join(SCOPES)} (got {', '.join(scopes) or 'none'})")
    return chosen


def create(engine: Engine, *, name: str, scopes: Iterable[str]) -> tuple[str, str]:
    """Make a token; return (id, token). The token is not kept: show it now or never."""
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise BadRequestError("token name must be 1-100 characters")
    chosen = check_scopes(list(scopes))
    token_id = secrets.token_hex(8)
    token = PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(insert(ApiToken).values(id=token_id, name=name, token_hash=hash_token(token), scopes=chosen))
    return token_id, token


def verify(engine: Engine, token: str) -> TokenInfo | None:
    """The token's identity and scopes, or None when it is not one of ours."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    digest = hash_token(token)
    with engine.connect() as conn:
        row = conn.execute(
            select(ApiToken.id, ApiToken.name, ApiToken.scopes, ApiToken.last_used_at, db_utcnow().label("now")).where(
                ApiToken.token_hash == digest
            )
        ).first()
    if row is None:
        return None
    if row.last_used_at is None or row.last_used_at + LAST_USED_RESOLUTION < row.now:
        with engine.begin() as conn:
            conn.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=db_utcnow()))
    return TokenInfo(row.id, row.name, tuple(row.scopes or ()))


def exists(engine: Engine, token: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(ApiToken.id).where(ApiToken.token_hash == hash_token(token))).first() is not None


def has_admin(engine: Engine) -> bool:
    with engine.connect() as conn:
        rows = conn.execute(select(ApiToken.scopes)).scalars().all()
    return any(allows(scopes or (), "admin") for scopes in rows)


def listing(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(ApiToken).order_by(ApiToken.created_at)).mappings().all()
    return [
        {
            "id": r["id"],
            "name": r["name"],
            "scopes": list(r["scopes"] or ()),
            "created_at": r["created_at"],
            "last_used_at": r["last_used_at"],
        }
        for r in rows
    ]


def revoke(engine: Engine, token_id: str) -> None:
    with engine.begin() as conn:
        gone = conn.execute(delete(ApiToken).where(ApiToken.id == token_id)).rowcount
    if not gone:
        raise MissingError(f"no API token with id {token_id!r}: `boxtasks token list` shows them")
