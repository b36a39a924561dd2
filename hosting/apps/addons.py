"""The mail addons of apps: `sendmail` (SMTP to send with) and `recvmail` (a mailbox to read).

Credentials are made once per app, kept in `app_addons` (so a repair or configure keeps them), handed
to the app as environment variables, and deleted on uninstall. recvmail is always optional: on a
server that does not receive mail (BOXTASKS_RECEIVES_MAIL=false) it is skipped, and the install goes on.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from config import Settings
from hosting.apps.manifest import Manifest
from models import AppAddon

logger = logging.getLogger(__name__)

SENDMAIL = "sendmail"
RECVMAIL = "recvmail"
MAIL_ADDONS = (SENDMAIL, RECVMAIL)


def set_up(conn: Connection, *, app_id: str, location: str, manifest: Manifest, settings: Settings) -> dict[str, Any]:
    """Make (or keep) the credentials of the mail addons the app asks for; return them by addon.

    An addon the app no longer asks for, or recvmail on a server that receives no mail, is removed.
    """
    kept = stored(conn, app_id)
    wanted = [a for a in MAIL_ADDONS if a in manifest.addons]
    if RECVMAIL in wanted and not settings.receives_mail:
        logger.info("app %s asks for recvmail, but this server receives no mail: skipped", app_id)
        wanted.remove(RECVMAIL)
    configs: dict[str, Any] = {}
    for addon in wanted:
        config = kept.get(addon) or _new_credentials(addon, app_id=app_id, location=location, settings=settings)
        # Server addresses follow the settings; the user and password stay the app's own.
        config.update(_servers(addon, settings))
        if addon in kept:
            conn.execute(delete(AppAddon).where(AppAddon.app_id == app_id, AppAddon.addon == addon))
        conn.execute(insert(AppAddon).values(app_id=app_id, addon=addon, config=config))
        configs[addon] = config
    for addon in set(kept) & set(MAIL_ADDONS) - set(wanted):
        conn.execute(delete(AppAddon).where(AppAddon.app_id == app_id, AppAddon.addon == addon))
    return configs


def stored(conn: Connection, app_id: str) -> dict[str, dict[str, Any]]:
    """The app's addon credentials as kept, by addon."""
    rows = conn.execute(select(AppAddon.addon, AppAddon.config).where(AppAddon.app_id == app_id))
    return {row.addon: dict(row.config) for row in rows}


def tear_down(conn: Connection, app_id: str) -> int:
    """Delete every addon credential of the app; how many there were."""
    return conn.execute(delete(AppAddon).where(AppAddon.app_id == app_id)).rowcount or 0


def env_for(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The environment an app sees for its mail addons: the names packaged apps read (`CLOUDRON_MAIL_*`)."""
    env: dict[str, str] = {}
    if SENDMAIL in configs:
        c = configs[SENDMAIL]
        env.update(
            {
                "CLOUDRON_MAIL_SMTP_SERVER": str(c["host"]),
                "CLOUDRON_MAIL_SMTP_PORT": str(c["port"]),
                "CLOUDRON_MAIL_SMTP_USERNAME": str(c["username"]),
                "CLOUDRON_MAIL_SMTP_PASSWORD": str(c["password"]),
                "CLOUDRON_MAIL_FROM": str(c["from"]),
                "CLOUDRON_MAIL_DOMAIN": str(c["domain"]),
            }
        )
    if RECVMAIL in configs:
        c = configs[RECVMAIL]
        env.update(
            {
                "CLOUDRON_MAIL_IMAP_SERVER": str(c["host"]),
                "CLOUDRON_MAIL_IMAP_PORT": str(c["port"]),
                "CLOUDRON_MAIL_IMAP_USERNAME": str(c["username"]),
                "CLOUDRON_MAIL_IMAP_PASSWORD": str(c["password"]),
                "CLOUDRON_MAIL_TO": str(c["address"]),
                "CLOUDRON_MAIL_TO_DOMAIN": str(c["address"]).rpartition("@")[2],
            }
        )
    return env


def _local_part(app_id: str, location: str) -> str:
    base = re.sub(r"[^a-z0-9.-]+", "-", (location or app_id).lower()).strip(".-") or "app"
    return f"{base}.app"


def _new_credentials(addon: str, *, app_id: str, location: str, settings: Settings) -> dict[str, Any]:
    address = f"{_local_part(app_id, location)}@{settings.mail_domain}"
    config: dict[str, Any] = {"username": address, "password": secrets.token_urlsafe(24)}
    if addon == SENDMAIL:
        config.update({"from": address, "domain": settings.mail_domain})
    else:
        config.update({"address": address})
    return config


def _servers(addon: str, settings: Settings) -> dict[str, Any]:
    if addon == SENDMAIL:
        return {"host": settings.addon_smtp_host, "port": settings.addon_smtp_port}
    return {"host": settings.addon_imap_host, "port": settings.addon_imap_port}
