"""A task kind with a wrong lock plan is refused when it is defined, with a message naming the fix."""

from __future__ import annotations

from typing import Any

import pytest

from lockman import LockPlanError, Mode
from tasks.errors import TaskDefinitionError
from tasks.locking import check_plan, locked_task, render_plan


def body(ctx: Any, *, app_id: str) -> None:
    return None


@pytest.mark.parametrize(
    ("plan", "words"),
    [
        ({}, "empty lock plan"),
        ({"platform": "Z"}, "unknown lock mode 'Z'"),
        ({"Platform!": "S"}, "malformed lock name"),
        ({"app:{missing}": "X"}, "names {missing}, which is not an argument of body()"),
    ],
)
def test_wrong_plans_are_refused_at_definition(plan: dict[str, str], words: str) -> None:
    with pytest.raises(TaskDefinitionError, match=r".*") as caught:
        check_plan("apptask", plan, body)
    assert words in str(caught.value)
    assert "apptask" in str(caught.value)


def test_decorator_refuses_a_bad_plan_before_registering() -> None:
    with pytest.raises(TaskDefinitionError, match="not an argument"):
        locked_task(kind="badkind", plan={"app:{nope}": "X"})(body)
    with pytest.raises(TaskDefinitionError, match="identifier"):
        locked_task(kind="bad-kind", plan={"platform": "S"})


def test_render_plan_fills_placeholders_and_checks_the_result() -> None:
    plan = {"platform": "S", "app:{app_id}": "X"}
    assert render_plan(plan, {"app_id": "a1b2"}) == (("app:a1b2", Mode.EXCLUSIVE), ("platform", Mode.SHARED))
    with pytest.raises(LockPlanError, match="missing argument"):
        render_plan(plan, {})
    with pytest.raises(LockPlanError, match="malformed lock name"):
        render_plan(plan, {"app_id": "has space"})
