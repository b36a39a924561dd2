"""`boxtasks locks`: who holds what, who waits, and why."""

from __future__ import annotations

import argparse
from typing import Any

from cli.output import print_json, print_table
from lockman import LockManager, LockTable


def locks_report(table: LockTable, version: int) -> dict[str, Any]:
    return {
        "version": version,
        "holders": [
            {"owner": h.owner, "label": h.label, "name": h.name, "mode": h.mode.value, "token": h.token}
            for h in table.holders
        ],
        "waiters": [
            {
                "owner": w.owner,
                "label": w.label,
                "seq": w.seq,
                "locks": {n: m.value for n, m in w.locks},
                "nested": w.nested,
                "blocked_by": [b.describe() for b in table.blockers_of(w.owner)],
            }
            for w in table.waiters
        ],
    }


def run(args: argparse.Namespace) -> int:
    manager = LockManager.from_settings()
    try:
        snap = manager.snapshot()
    finally:
        manager.dispose()
    report = locks_report(snap.table, snap.version)
    if args.json:
        print_json(report)
        return 0
    print_table(
        ["LOCK", "MODE", "HOLDER", "TASK", "TOKEN"],
        [(h["name"], h["mode"], h["label"], h["owner"], h["token"]) for h in report["holders"]],
        empty="no locks held",
    )
    print_table(
        ["#", "TASK", "KIND", "WANTS", "WHY"],
        [
            (
                w["seq"],
                w["owner"],
                w["label"],
                " ".join(f"{n}:{m}" for n, m in w["locks"].items()),
                "; ".join(w["blocked_by"]) or "ready",
            )
            for w in report["waiters"]
        ],
        empty="no waiters",
    )
    return 0
