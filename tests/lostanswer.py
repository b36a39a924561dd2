"""A write whose answer is lost: it lands in the database, then the connection drops before the reply."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from models import records


def lose_first_answer(
    monkeypatch: pytest.MonkeyPatch, name: str, *, meanwhile: Callable[[], object] = lambda: None
) -> list[int]:
    """`records.<name>` lands its first write, then `meanwhile` runs, then it fails as a dropped
    connection does; later calls go through. Returns the list of calls (one entry each)."""
    write = getattr(records, name)
    calls: list[int] = []

    def lands_then_drops(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        done = write(*args, **kwargs)
        if len(calls) == 1:
            meanwhile()
            raise OperationalError(f"{name} ...", {}, ConnectionResetError("answer lost"), connection_invalidated=True)
        return done

    monkeypatch.setattr(records, name, lands_then_drops)
    return calls
