"""Backup retention as a pure policy: rows in, {id: reason} out."""

from __future__ import annotations

import datetime as dt

from hosting.backups import retention


def test_retention_keeps_the_newest_and_daily_ones_and_what_others_need() -> None:
    now = dt.datetime(2026, 11, 29, 12, 0)
    hour = dt.timedelta(hours=1)

    def item(i: str, age: dt.timedelta, state: str = "normal") -> retention.Item:
        return retention.Item(i, "app", "a1", state, now - age)

    items = [
        item("today-1", hour),
        item("today-2", 2 * hour),
        item("today-3", 3 * hour),
        item("yesterday-1", 24 * hour),
        item("yesterday-2", 25 * hour),
        item("old", dt.timedelta(days=40)),
        item("old-archived", dt.timedelta(days=41)),
        item("old-in-box", dt.timedelta(days=42)),
        item("failed", 10 * hour, state="error"),
        item("creating", 30 * hour, state="creating"),
        retention.Item("box-1", "box", None, "normal", now - hour, ("old-in-box",)),
    ]
    policy = retention.Policy(keep_last=2, keep_daily_days=7, error_grace=6 * hour)
    discard = retention.plan(items, policy, now=now, protected={"old-archived"})
    assert sorted(discard) == ["failed", "old", "today-3", "yesterday-2"]
    assert "newest 2" in discard["old"] and "failed" in discard["failed"]


def test_a_shorter_daily_window_keeps_only_the_newest_n() -> None:
    now = dt.datetime(2026, 11, 29, 12, 0)
    items = [retention.Item(f"b{i}", "app", "a1", "normal", now - dt.timedelta(days=i)) for i in range(5)]
    policy = retention.Policy(keep_last=1, keep_daily_days=0, error_grace=dt.timedelta(hours=6))
    assert sorted(retention.plan(items, policy, now=now)) == ["b1", "b2", "b3", "b4"]
    # Each app is counted on its own.
    other = [retention.Item("c0", "app", "a2", "normal", now - dt.timedelta(days=9))]
    assert "c0" not in retention.plan(items + other, policy, now=now)
