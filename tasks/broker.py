"""What the sweep asks of the broker: how many messages wait in a queue, and a queued task's message again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.secrets import redact
from tasks.celery import app
from tasks.client import task_name


def ready_count(queue: str) -> int | None:
    """Messages ready in `queue` (not those a node has taken); None if the broker does not know the queue.

    A passive declare, on a channel of its own: a queue that does not exist closes the channel (AMQP).
    """
    with app.connection_for_read() as conn:
        channel = conn.channel()
        try:
            declared = channel.queue_declare(queue=queue, passive=True)
        except conn.channel_errors:
            return None
        finally:
            try:
                channel.close()
            except conn.connection_errors + conn.channel_errors:
                pass
    return int(declared.message_count)


def resend(rows: Sequence[Any]) -> None:
    """Send the message of each queued task (id, type, queue, args) again, as `tasks.client.enqueue` did
    (secrets masked: the worker reads them from the row)."""
    for row in rows:
        app.send_task(task_name(row.type), kwargs=redact(row.args), task_id=row.id, queue=row.queue)
