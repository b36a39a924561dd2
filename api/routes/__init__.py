"""The REST API's routers, one module per family, all under /api/v1."""

from __future__ import annotations

from api.routes import apps, backups, events, index, locks, platform_routes, tasks

ROUTERS = (
    index.router,
    apps.router,
    tasks.router,
    backups.router,
    platform_routes.router,
    locks.router,
    events.router,
)

__all__ = ["ROUTERS"]
