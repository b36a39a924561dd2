"""Lock plans are checked where they are declared, and a refusal says what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockman import LockManager
from lockman.errors import LockPlanError
from lockman.plan import Mode, check_name, lock_set, parse_mode


def test_a_good_plan_is_a_sorted_tuple_of_modes() -> None:
    assert lock_set({"platform": "S", "app:a1b2": "X", "task:fullbackup": Mode.EXCLUSIVE}) == (
        ("app:a1b2", Mode.EXCLUSIVE),
        ("platform", Mode.SHARED),
        ("task:fullbackup", Mode.EXCLUSIVE),
    )
    # Pairs work too, and the same lock twice in the same mode is just one lock.
    assert lock_set([("platform", "S"), ("platform", "S")]) == (("platform", Mode.SHARED),)


@pytest.mark.parametrize("mode", ["Z", "s", "x", "shared", "", None, 1, ["X"]])
def test_an_unknown_mode_is_refused(mode: object) -> None:
    with pytest.raises(LockPlanError) as info:
        lock_set({"platform": mode})
    message = str(info.value)
    assert "unknown lock mode" in message and repr(mode) in message
    assert "use 'S' (shared) or 'X' (exclusive)" in message
    with pytest.raises(LockPlanError, match="use 'S'"):
        parse_mode(mode)


@pytest.mark.parametrize("plan", [{}, []])
def test_an_empty_lock_set_is_refused(plan: object) -> None:
    with pytest.raises(LockPlanError) as info:
        lock_set(plan)  # type: ignore[arg-type]
    assert "empty lock set" in str(info.value)
    assert "name at least one lock" in str(info.value)


@pytest.mark.parametrize(
    "name",
    ["", "Platform", "app a", "app:", ":a", "app::a", "1app", "app:a/b", "x" * 33, "app:" + "a" * 97, None, 7],
)
def test_a_malformed_lock_name_is_refused(name: object) -> None:
    with pytest.raises(LockPlanError) as info:
        lock_set([(name, "X")])  # type: ignore[list-item]
    message = str(info.value)
    assert "malformed lock name" in message and repr(name) in message
    assert "use a lowercase kind with an optional ':id'" in message and "'app:a1b2'" in message
    with pytest.raises(LockPlanError):
        check_name(name)


@pytest.mark.parametrize("name", ["platform", "task:fullbackup", "app:a1b2-c3.d_e", "app:D", "x" * 32])
def test_well_formed_lock_names_pass(name: str) -> None:
    assert check_name(name) == name


def test_the_same_lock_twice_with_two_modes_is_refused() -> None:
    with pytest.raises(LockPlanError) as info:
        lock_set([("platform", "S"), ("app:a", "X"), ("platform", "X")])
    message = str(info.value)
    assert "'platform' asked for twice with different modes (S and X)" in message
    assert "name it once" in message, f"the message does not say what to fix: {message}"


def test_a_bad_plan_is_refused_before_the_database_is_touched(tmp_path: Path) -> None:
    """The manager checks the plan first: no connection is even made to a database that is not there."""
    manager = LockManager(f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}", row_id="r")
    try:
        with pytest.raises(LockPlanError, match="unknown lock mode"):
            manager.try_acquire("t1", {"platform": "Q"})
        with pytest.raises(LockPlanError, match="empty lock set"):
            manager.acquire("t1", {}, timeout=0.1)
    finally:
        manager.dispose()
    assert not (tmp_path / "missing").exists()
