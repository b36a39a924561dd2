"""Admin email over SMTP (smtplib): for what needs an admin now, sent only after the news is committed."""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Iterable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from config import Settings
from hosting.errors import NotifyError

logger = logging.getLogger(__name__)


def enabled(settings: Settings) -> bool:
    return bool(settings.smtp_host and settings.admin_emails)


def compose(settings: Settings, *, subject: str, body: str) -> EmailMessage | None:
    """An email to every admin, or None when admin email is not configured (no SMTP host or no admins)."""
    if not enabled(settings):
        logger.info("admin email is off (set BOXTASKS_SMTP_HOST and BOXTASKS_ADMIN_EMAILS): %s", subject)
        return None
    msg = EmailMessage()
    msg["Subject"] = f"[boxtasks] {subject}"
    msg["From"] = settings.smtp_from
    msg["To"] = ", ".join(settings.admin_emails)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=settings.smtp_from.rpartition("@")[2] or None)
    msg.set_content(body)
    return msg


def send(settings: Settings, messages: Iterable[EmailMessage]) -> int:
    """Send over one SMTP connection; NotifyError names the server and the reason."""
    batch = list(messages)
    if not batch:
        return 0
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds) as smtp:
            for msg in batch:
                smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as err:
        raise NotifyError(
            f"cannot send admin email through {settings.smtp_host}:{settings.smtp_port}: {err}; "
            "check BOXTASKS_SMTP_HOST/BOXTASKS_SMTP_PORT"
        ) from err
    return len(batch)


def send_quietly(settings: Settings, messages: Iterable[EmailMessage]) -> int:
    """Send, but only log a failure: an undeliverable email must not fail the task that raised it."""
    try:
        return send(settings, messages)
    except NotifyError as err:
        logger.warning("%s", err)
        return 0
