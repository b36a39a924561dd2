"""`boxtasks api`: serve the REST API with uvicorn."""

from __future__ import annotations

import argparse
from typing import Any

from config import get_settings


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    api = sub.add_parser("api", help="serve the REST API (uvicorn)", parents=[common])
    api.add_argument("--host", help="address to listen on (default BOXTASKS_API_ADDRESS, 127.0.0.1)")
    api.add_argument("--port", type=int, help="port to listen on (default BOXTASKS_API_PORT, 3000)")
    api.set_defaults(handler=serve)


def argv(host: str, port: int) -> list[str]:
    """The uvicorn command line for the API (what `make run` starts)."""
    return ["-m", "uvicorn", "api.app:create_app", "--factory", "--host", host, "--port", str(port), "--no-access-log"]


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host or settings.api_address,
        port=args.port or settings.api_port,
        access_log=False,
    )
    return 0
