"""The REST API's routers, one module per family, all under /api/v1."""

from __future__ import annotations

from api.routes import apps, backups, events, locks, platform_routes, tasks

ROUTERS = (apps.router, tasks.router, backups.router, platform_routes.router, locks.router, events.router)

__all__ = ["ROUTERS"]
