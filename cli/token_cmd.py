"""`boxtasks token create|list|revoke`: the REST API's bearer tokens."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.output import print_json, print_table
from frontdoor import tokens
from models import get_engine


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    token = sub.add_parser("token", help="API tokens", parents=[common])
    tsub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = tsub.add_parser(
        "create", help="make a token and print it (once: it is kept only as a hash)", parents=[common]
    )
    create.add_argument("--name", required=True, help="who or what uses it")
    create.add_argument(
        "--scope",
        action="append",
        choices=tokens.SCOPES,
        help="read, write or admin (each includes the ones before it; default read)",
    )
    create.set_defaults(handler=create_token)
    ls = tsub.add_parser("list", help="the tokens (never the secrets)", parents=[common])
    ls.set_defaults(handler=list_tokens)
    revoke = tsub.add_parser("revoke", help="delete a token", parents=[common])
    revoke.add_argument("token_id", metavar="ID")
    revoke.set_defaults(handler=revoke_token)


def create_token(args: argparse.Namespace) -> int:
    token_id, token = tokens.create(get_engine(), name=args.name, scopes=args.scope or ["read"])
    if args.json:
        print_json({"id": token_id, "name": args.name, "scopes": args.scope or ["read"], "token": token})
    else:
        sys.stdout.write(f"{token}\n")
        sys.stderr.write(f"token {token_id} ({args.name}): shown once, keep it now\n")
    return 0


def list_tokens(args: argparse.Namespace) -> int:
    rows = tokens.listing(get_engine())
    if args.json:
        print_json(rows)
        return 0
    print_table(
        ["ID", "NAME", "SCOPES", "CREATED", "LAST USED"],
        [(r["id"], r["name"], ",".join(r["scopes"]), r["created_at"], r["last_used_at"] or "-") for r in rows],
        empty="no tokens",
    )
    return 0


def revoke_token(args: argparse.Namespace) -> int:
    tokens.revoke(get_engine(), args.token_id)
    if args.json:
        print_json({"revoked": args.token_id})
    else:
        sys.stdout.write(f"token {args.token_id} revoked\n")
    return 0
