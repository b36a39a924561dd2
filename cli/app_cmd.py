"""`boxtasks app ...`: start app operations (checked as the API checks them), list and show apps."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cli.errors import CliError, UsageError
from cli.output import plain, print_json, print_table
from frontdoor import actions, queries
from frontdoor.schemas import StartedOut
from models import get_engine

#: A manifest is a few KiB; the API refuses bodies over 1 MiB by default.
MAX_MANIFEST_BYTES = 1 << 20
_SIMPLE = {
    "start": "start the app's container",
    "stop": "stop the app's container (it stays stopped until started)",
    "restart": "restart the app's container",
    "repair": "rebuild the app's container from its record",
    "uninstall": "remove the app, its container, data, ports and credentials",
    "backup": "back up the app",
}


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    app = sub.add_parser("app", help="install, configure, start, stop, ... apps", parents=[common])
    asub = app.add_subparsers(dest="app_command", required=True, metavar="ACTION")

    ls = asub.add_parser("list", help="the apps", parents=[common])
    ls.set_defaults(handler=list_apps)
    sh = asub.add_parser("show", help="one app", parents=[common])
    sh.add_argument("app_id", metavar="APP")
    sh.set_defaults(handler=show_app)

    install = asub.add_parser("install", help="install an app from its manifest", parents=[common])
    install.add_argument("--manifest", required=True, type=Path, metavar="FILE", help="the app's manifest (JSON)")
    install.add_argument("--location", required=True, metavar="NAME", help="where the app lives, like 'blog'")
    install.add_argument("--app-id", metavar="ID", help="the new app's id (default: made up)")
    install.add_argument("--image", metavar="IMAGE", help="the image to run (default: the manifest's dockerImage)")
    _limits(install)
    install.set_defaults(handler=install_app)

    configure = asub.add_parser("configure", help="change ports, resources or env", parents=[common])
    configure.add_argument("app_id", metavar="APP")
    _limits(configure)
    configure.set_defaults(handler=configure_app)

    for name, doc in _SIMPLE.items():
        p = asub.add_parser(name, help=doc, parents=[common])
        p.add_argument("app_id", metavar="APP")
        p.set_defaults(handler=simple_operation, operation=name)

    update = asub.add_parser("update", help="update the app to the version of a manifest", parents=[common])
    update.add_argument("app_id", metavar="APP")
    update.add_argument("--manifest", required=True, type=Path, metavar="FILE")
    update.add_argument("--image", metavar="IMAGE", help="the image to run (default: the manifest's dockerImage)")
    update.set_defaults(handler=update_app)

    restore = asub.add_parser("restore", help="restore the app from one of its backups", parents=[common])
    restore.add_argument("app_id", metavar="APP")
    restore.add_argument("--backup", required=True, metavar="ID", help="the backup's id (`boxtasks backup list`)")
    restore.set_defaults(handler=restore_app)

    clone = asub.add_parser("clone", help="make a new app from a backup of this one", parents=[common])
    clone.add_argument("app_id", metavar="APP")
    clone.add_argument("--backup", required=True, metavar="ID")
    clone.add_argument("--location", required=True, metavar="NAME")
    clone.add_argument("--new-app-id", metavar="ID", help="the new app's id (default: made up)")
    clone.add_argument("--port", action="append", default=[], metavar="ENV=HOSTPORT", help="repeat for each port")
    clone.set_defaults(handler=clone_app)


def _limits(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--port",
        action="append",
        default=[],
        metavar="ENV=HOSTPORT",
        help="repeat for each port; on install, ENV=off leaves a port the manifest binds by default unbound",
    )
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="repeat for each variable")
    p.add_argument("--cpu-shares", type=int, metavar="N", help="relative CPU weight under contention")
    p.add_argument("--cpu-quota", type=int, metavar="PCT", help="hard CPU limit, percent of one CPU")
    p.add_argument("--memory", type=int, metavar="BYTES", help="memory limit in bytes, swap included")


def started(args: argparse.Namespace, what: str, result: StartedOut) -> int:
    if args.json:
        print_json({"task_id": result.task_id, "app_id": result.app_id})
    else:
        sys.stdout.write(
            f"{what}: task {result.task_id}"
            + (f" (app {result.app_id})" if result.app_id else "")
            + f"\n  follow it: boxtasks task watch {result.task_id}\n"
        )
    return 0


def list_apps(args: argparse.Namespace) -> int:
    apps = queries.list_apps(get_engine())
    if args.json:
        print_json(apps)
        return 0
    print_table(
        ["ID", "LOCATION", "APP", "VERSION", "STATE", "RUN", "PORTS"],
        [
            (
                a.id,
                a.location,
                a.appStoreId,
                a.version,
                a.installationState,
                a.runState,
                " ".join(f"{k}={v.hostPort}/{v.type}" for k, v in sorted(a.portBindings.items())),
            )
            for a in apps
        ],
        empty="no apps",
    )
    return 0


def show_app(args: argparse.Namespace) -> int:
    app = queries.get_app(get_engine(), args.app_id)
    if args.json:
        print_json(app)
        return 0
    for key, value in plain(app).items():
        text = json.dumps(value) if isinstance(value, dict | list) else ("-" if value is None else str(value))
        sys.stdout.write(f"{key + ':':<19} {text}\n")
    return 0


def install_app(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {"manifest": _manifest(args.manifest), "location": args.location}
    if args.image:
        options["image"] = args.image
    options.update(_limit_options(args, unbind=True))
    return started(args, "install", actions.install(get_engine(), options, app_id=args.app_id))


def configure_app(args: argparse.Namespace) -> int:
    options = _limit_options(args)
    return started(args, "configure", actions.configure(get_engine(), args.app_id, options))


def simple_operation(args: argparse.Namespace) -> int:
    return started(args, args.operation, actions.app_operation(get_engine(), args.app_id, args.operation))


def update_app(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {"manifest": _manifest(args.manifest)}
    if args.image:
        options["image"] = args.image
    return started(args, "update", actions.app_operation(get_engine(), args.app_id, "update", options))


def restore_app(args: argparse.Namespace) -> int:
    options = {"backupId": args.backup}
    return started(args, "restore", actions.app_operation(get_engine(), args.app_id, "restore", options))


def clone_app(args: argparse.Namespace) -> int:
    ports = {k: _int(v, f"--port {k}") for k, v in _pairs(args.port, "--port").items()}
    options: dict[str, Any] = {"backupId": args.backup, "location": args.location, "ports": ports}
    if args.new_app_id:
        options["appId"] = args.new_app_id
    return started(args, "clone", actions.clone(get_engine(), args.app_id, options))


def _limit_options(args: argparse.Namespace, *, unbind: bool = False) -> dict[str, Any]:
    """The options of --port, --env and the limits; with `unbind`, `--port ENV=off` leaves a default port unbound."""
    options: dict[str, Any] = {}
    if args.port:
        options["ports"] = {
            k: None if unbind and v == "off" else _int(v, f"--port {k}") for k, v in _pairs(args.port, "--port").items()
        }
    if args.env:
        options["env"] = _pairs(args.env, "--env")
    for key, value in (("cpuShares", args.cpu_shares), ("cpuQuota", args.cpu_quota), ("memoryLimit", args.memory)):
        if value is not None:
            options[key] = value
    return options


def _manifest(path: Path) -> dict[str, Any]:
    """The manifest file as a JSON object; any problem with the file is one line and exit 2."""
    from hosting.apps.manifest import MAX_DEPTH

    try:
        raw = path.read_bytes()
        if len(raw) > MAX_MANIFEST_BYTES:
            raise UsageError(f"manifest {path} is larger than {MAX_MANIFEST_BYTES} bytes")
        text = raw.decode("utf-8")
        # Depth first: the decoder would recurse once per level (RecursionError past ~1000).
        if _bracket_depth(text) > MAX_DEPTH:
            raise UsageError(f"manifest {path} nests deeper than {MAX_DEPTH} levels: flatten it")
        document = json.loads(text)
    except OSError as err:
        raise UsageError(f"cannot read manifest {path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise UsageError(f"manifest {path} is not UTF-8 text (byte {err.start}): save it as UTF-8") from err
    except json.JSONDecodeError as err:
        raise UsageError(f"manifest {path} is not JSON: {err}") from err
    if not isinstance(document, dict):
        raise UsageError(f"manifest {path} must be a JSON object")
    return document


def _bracket_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _pairs(items: list[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            # An env value is a secret: a malformed --env is not echoed (it may be the value alone).
            got = "one without a name or '='" if flag == "--env" else repr(item)
            raise CliError(f"{flag} takes NAME=VALUE (got {got})")
        out[key] = value
    return out


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise CliError(f"{what}: {value!r} is not a port number") from None
