"""`boxtasks locks`: who holds what, who waits, and why (the report is `api.queries.locks_report`)."""

from __future__ import annotations

import argparse

from api.queries import locks_report
from cli.output import print_json, print_table
from lockman import LockManager
from models import get_engine


def run(args: argparse.Namespace) -> int:
    manager = LockManager.from_settings()
    try:
        snap = manager.snapshot()
    finally:
        manager.dispose()
    report = locks_report(snap.table, snap.version, get_engine())
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
