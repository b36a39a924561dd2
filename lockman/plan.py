"""Lock names, modes and plans, checked where they are declared."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping

from lockman.errors import LockPlanError

#: `platform`, `task:fullbackup`, `app:a1b2-...`: a kind, then optionally `:` and an id.
LOCK_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}(:[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


class Mode(enum.StrEnum):
    SHARED = "S"
    EXCLUSIVE = "X"


def conflicts(a: Mode, b: Mode) -> bool:
    """X conflicts with everything; S only with X."""
    return a is Mode.EXCLUSIVE or b is Mode.EXCLUSIVE


def covers(held: Mode, wanted: Mode) -> bool:
    """Holding `held` already gives `wanted` (X covers S)."""
    return held is Mode.EXCLUSIVE or wanted is Mode.SHARED


def parse_mode(value: object) -> Mode:
    try:
        return Mode(str(value)) if isinstance(value, str) else Mode(value)  # type: ignore[arg-type]
    except ValueError:
        raise LockPlanError(f"unknown lock mode {value!r}: use 'S' (shared) or 'X' (exclusive)") from None


def check_name(name: object) -> str:
    if not isinstance(name, str) or not LOCK_NAME.fullmatch(name):
        raise LockPlanError(
            f"malformed lock name {name!r}: use a lowercase kind with an optional ':id', "
            "like 'platform', 'task:update' or 'app:a1b2'"
        )
    return name


LockSet = tuple[tuple[str, Mode], ...]


def lock_set(plan: Mapping[str, object] | Iterable[tuple[str, object]]) -> LockSet:
    """Validate a plan ({name: mode} or pairs) into a sorted tuple; refuse empty or contradictory plans."""
    pairs = list(plan.items()) if isinstance(plan, Mapping) else list(plan)
    if not pairs:
        raise LockPlanError("empty lock set: a task must name at least one lock")
    seen: dict[str, Mode] = {}
    for name, mode in pairs:
        checked = check_name(name)
        parsed = parse_mode(mode)
        if checked in seen and seen[checked] is not parsed:
            raise LockPlanError(
                f"lock {checked!r} asked for twice with different modes ({seen[checked].value} and {parsed.value}): "
                "name it once, with 'X' if any step needs it exclusive"
            )
        seen[checked] = parsed
    return tuple(sorted(seen.items()))
