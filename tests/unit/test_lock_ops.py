"""Lock operations as data (`lockman.ops`) and the document's format version (`lockman.table`):
a release that meets a document it does not fully understand refuses it rather than dropping
what it does not know."""

from __future__ import annotations

from typing import Any

import pytest

from lockman import Granted, LockDocumentError, LockFormatError, LockTable, Queued, Release, Request, lock_set
from lockman.ops import NOTHING

APP = lock_set({"platform": "S", "app:a": "X"})


def nobody_dead(_owners: object) -> set[str]:
    return set()


def apply(table: LockTable, request: Request, version: int = 7) -> tuple[LockTable, object]:
    new, answer = request.apply(table, version, nobody_dead, lambda _gone: None)
    return (table if new is None else new), answer


def test_grant_queue_release_and_nothing_to_write() -> None:
    table, granted = apply(LockTable(), Request("acquire", owner="t1", locks=APP, label="apptask"))
    assert granted == Granted(8, APP), "the token is the version the write creates"
    update = Request("acquire", owner="t2", locks=lock_set({"platform": "X"}), label="update")
    table, queued = apply(table, update)
    assert isinstance(queued, Queued) and queued.blockers[0].owner == "t1"
    new, again = update.apply(table, 8, nobody_dead, lambda _gone: None)
    assert new is None and again == queued, "asking again while blocked writes nothing"
    table, released = apply(table, Request("release", owner="t1"))
    assert isinstance(released, Release) and [w.owner for w in released.ready] == ["t2"]
    assert {h.name for h in released.released} == {"platform", "app:a"}
    new, nothing = Request("release", owner="t1").apply(table, 9, nobody_dead, lambda _gone: None)
    assert new is None and nothing == NOTHING


def test_a_sweep_and_a_blocked_acquire_drop_dead_owners() -> None:
    table, _ = apply(LockTable(), Request("acquire", owner="dead", locks=APP))
    heard: list[set[str]] = []
    new, granted = Request("acquire", owner="t2", locks=APP).apply(table, 9, lambda o: set(o), heard.append)
    assert isinstance(granted, Granted) and new is not None and new.owners() == {"t2"}
    assert heard == [{"dead"}]
    new, swept = Request("sweep").apply(table, 9, lambda o: set(o), heard.append)
    assert new is not None and new.owners() == set() and isinstance(swept, Release) and swept.released


def _doc(**changes: Any) -> dict[str, Any]:
    table, _ = apply(LockTable(), Request("acquire", owner="t1", locks=APP, label="apptask"))
    table, _ = apply(table, Request("acquire", owner="t2", locks=lock_set({"platform": "X"})))
    doc = table.to_json()
    doc.update(changes)
    return doc


def test_the_document_carries_its_format_and_reads_back() -> None:
    doc = _doc()
    assert doc["v"] == 1
    assert LockTable.from_json(doc, row_id="main").to_json() == doc
    older = {k: v for k, v in doc.items() if k != "v"}
    assert LockTable.from_json(older, row_id="main").to_json() == doc, "no `v` is format 1 (older releases)"


def test_a_newer_format_is_refused_with_a_clear_error() -> None:
    with pytest.raises(LockFormatError) as caught:
        LockTable.from_json(_doc(v=2), row_id="main")
    assert caught.value.row_id == "main"
    assert "format 2" in str(caught.value) and "newer release" in str(caught.value)


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("the document", lambda d: d.update(leases={"t1": 30})),
        ("a holder entry", lambda d: d["holders"][0].update(expires="2026-12-08")),
        ("a waiter entry", lambda d: d["waiters"][0].update(priority=3)),
    ],
)
def test_an_unknown_field_is_refused_not_dropped(where: str, change: Any) -> None:
    doc = _doc()
    change(doc)
    with pytest.raises(LockFormatError, match=f"unknown field.* in {where}"):
        LockTable.from_json(doc, row_id="main")


def test_answers_left_by_the_posting_releases_are_read_and_dropped() -> None:
    doc = _doc(answers={"9f86d081884c7d65": {"granted": 18}})
    table = LockTable.from_json(doc, row_id="main")
    assert "answers" not in table.to_json() and len(table.holders) == 2


@pytest.mark.parametrize("bad", [{"v": "2"}, {"v": 0}, {"v": True}, {"holders": ["x"]}])
def test_a_malformed_format_or_entry_is_a_document_error(bad: dict[str, Any]) -> None:
    with pytest.raises(LockDocumentError):
        LockTable.from_json(_doc(**bad), row_id="main")
