"""`boxtasks platform backup|update|start|capabilities` and `boxtasks backup list|show`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.app_cmd import started
from cli.output import plain, print_json, print_table
from frontdoor import actions, queries
from frontdoor.errors import DuplicateError
from models import get_engine


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    platform = sub.add_parser("platform", help="full backup, platform update, platform start", parents=[common])
    psub = platform.add_subparsers(dest="platform_command", required=True, metavar="ACTION")
    backup = psub.add_parser("backup", help="back up every app (or those named), then the platform", parents=[common])
    backup.add_argument("--app", dest="app_ids", action="append", metavar="APP", help="only these apps (repeat)")
    backup.set_defaults(handler=platform_task, kind="fullbackup")
    update = psub.add_parser("update", help="update the platform itself", parents=[common])
    update.add_argument("--release-url", metavar="URL", help="the release to install (default: the newest)")
    update.set_defaults(handler=platform_task, kind="update")
    start = psub.add_parser("start", help="bring the platform and every app up", parents=[common])
    start.set_defaults(handler=platform_task, kind="platformstart")
    caps = psub.add_parser(
        "capabilities",
        help="what this server runs, the addons it provides to apps, manifests it reads",
        parents=[common],
    )
    caps.set_defaults(handler=show_capabilities)

    backups = sub.add_parser("backup", help="list and show backups", parents=[common])
    bsub = backups.add_subparsers(dest="backup_command", required=True, metavar="ACTION")
    ls = bsub.add_parser("list", help="backups, newest first", parents=[common])
    ls.add_argument("--app", dest="app_id", metavar="APP", help="only this app's backups")
    ls.add_argument("--type", choices=["app", "box"])
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(handler=list_backups)
    show = bsub.add_parser("show", help="one backup", parents=[common])
    show.add_argument("backup_id", metavar="ID")
    show.set_defaults(handler=show_backup)


def platform_task(args: argparse.Namespace) -> int:
    task_args: dict[str, Any] = {}
    if args.kind == "fullbackup" and args.app_ids:
        task_args["app_ids"] = args.app_ids
    if args.kind == "update" and args.release_url:
        task_args["release_url"] = args.release_url
    try:
        result = actions.platform_task(get_engine(), args.kind, task_args)
    except DuplicateError as err:
        return already_under_way(args, err)
    return started(args, args.kind, result)


def show_capabilities(args: argparse.Namespace) -> int:
    caps = actions.capabilities()
    if args.json:
        print_json(caps)
        return 0
    for key, label in (
        ("app_operations", "app operations"),
        ("platform_tasks", "platform tasks"),
        ("addons", "addons"),
        ("manifest_versions", "manifestVersion"),
    ):
        sys.stdout.write(f"{label + ':':<17} {' '.join(str(v) for v in caps[key])}\n")
    return 0


def already_under_way(args: argparse.Namespace, err: DuplicateError) -> int:
    """One of the kind runs already: say which (its id on stdout with --json), exit 1; nothing was started."""
    if args.json:
        print_json({"task_id": err.task_id, "started": False, "message": err.message})
    else:
        sys.stderr.write(f"boxtasks: {err.message}\n  follow it: boxtasks task watch {err.task_id}\n")
    return 1


def list_backups(args: argparse.Namespace) -> int:
    rows = queries.list_backups(get_engine(), app_id=args.app_id, type=args.type, limit=max(1, args.limit))
    if args.json:
        print_json(rows)
        return 0
    print_table(
        ["ID", "TYPE", "APP", "VERSION", "STATE", "SIZE", "CREATED"],
        [(r.id, r.type, r.app_id or "-", r.version, r.state, r.size, r.created_at) for r in rows],
        empty="no backups",
    )
    return 0


def show_backup(args: argparse.Namespace) -> int:
    row = queries.get_backup(get_engine(), args.backup_id)
    if args.json:
        print_json(row)
        return 0
    for key, value in plain(row).items():
        sys.stdout.write(f"{key + ':':<12} {'-' if value is None else value}\n")
    return 0
