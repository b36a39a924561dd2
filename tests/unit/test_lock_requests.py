"""Lock operations as data and their answers as JSON (`lockman.requests`): what a writer applying
another's request leaves must read back as what that writer would have got itself."""

from __future__ import annotations

import pytest

from lockman import Granted, LockDeadlockError, LockError, LockStateError, LockTable, lock_set
from lockman.requests import NOTHING, Release, Request, answer_from_json, answer_to_json

APP = lock_set({"platform": "S", "app:a": "X"})


def nobody_dead(_owners: object) -> set[str]:
    return set()


def apply(table: LockTable, request: Request, version: int = 7) -> tuple[LockTable, object]:
    new, answer = request.apply(table, version, nobody_dead, lambda _gone: None)
    return (table if new is None else new), answer


SWEEP = Request("sweep")


def round_trip(answer: object, request: Request = SWEEP) -> object:
    return answer_from_json(answer_to_json(answer, request), request)  # type: ignore[arg-type]


def test_every_kind_of_request_reads_back_from_json() -> None:
    requests = [
        Request("acquire", owner="t1", locks=APP, label="apptask", key="00ff00ff00ff00ff"),
        Request("release", owner="t1", names=("app:a",)),
        Request("release", owner="t1"),
        Request("withdraw", owner="t1"),
        Request("evict", owners=("t1", "t2")),
        Request("sweep"),
    ]
    for request in requests:
        assert Request.from_json(request.to_json()) == request


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"kind": "steal"},
        {"kind": "acquire", "owner": 5},
        {"kind": "acquire", "locks": {"app:a": "Z"}},
        {"kind": "acquire", "locks": [["app:a", "X"]]},
    ],
)
def test_a_request_that_does_not_parse_is_a_lock_error(body: object) -> None:
    with pytest.raises(LockError):
        Request.from_json(body)


def test_grants_waits_and_releases_read_back_as_they_were() -> None:
    acquire = Request("acquire", owner="t1", locks=APP, label="apptask")
    table, granted = apply(LockTable(), acquire)
    update = Request("acquire", owner="t2", locks=lock_set({"platform": "X"}), label="update")
    table, queued = apply(table, update)
    release = Request("release", owner="t1")
    table, released = apply(table, release)
    assert round_trip(granted, acquire) == granted
    assert isinstance(granted, Granted)
    assert answer_to_json(granted, acquire) == {"granted": 7 + 1}, "what the request says is left out"
    assert round_trip(queued, update) == queued
    assert isinstance(released, Release) and released.ready and released.released
    assert round_trip(released, release) == released
    assert round_trip(released, Request("sweep")) == released, "an evicted holder's owner is kept"
    assert round_trip(NOTHING) == NOTHING


def test_an_error_reads_back_as_the_same_error_with_the_same_words() -> None:
    for err in (
        LockStateError("owner 't2' already waits for platform X"),
        LockDeadlockError("a cycle"),
        LockError("x"),
    ):
        back = round_trip(err)
        assert type(back) is type(err) and str(back) == str(err)
    foreign = answer_from_json({"error": "KeyError", "message": "m"}, SWEEP)
    assert type(foreign) is LockError, "only lockman's own errors are rebuilt as themselves"


def test_answers_stay_with_the_document_through_every_transition() -> None:
    answers = {"12": {"granted": 3, "locks": [["app:a", "X"]]}}
    table = LockTable().with_answers(answers)
    for request in (
        Request("acquire", owner="t1", locks=APP),
        Request("acquire", owner="t2", locks=lock_set({"app:a": "X"})),
        Request("withdraw", owner="t2"),
        Request("release", owner="t1"),
        Request("evict", owners=("t1",)),
    ):
        table, _answer = apply(table, request)
        assert table.answers == answers
    assert LockTable.from_json(table.to_json(), row_id="main").answers == answers
    assert "answers" not in LockTable().to_json(), "absent when empty: older documents read the same"
