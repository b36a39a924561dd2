"""The REST API (FastAPI) over the front door (`frontdoor`), which it shares with the CLI.

- `api.app.create_app`: the FastAPI app (`uvicorn api.app:create_app --factory`).
- `api.routes`: one module per resource; `api.auth`: bearer tokens; `api.metrics`: /metrics.

The checks, reads, models and errors are `frontdoor`'s: a route only maps HTTP onto them.
"""

from __future__ import annotations

__all__: list[str] = []
