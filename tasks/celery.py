"""The Celery app: `celery -A tasks worker|beat|flower`. Configured lazily from Settings."""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from config import get_settings
from config.celery import celery_config
from tasks.flow import Flow
from tasks.flower_auth import refuse_open_flower
from tasks.poolwatch import PoolWatch


def _config() -> dict[str, Any]:
    return celery_config(get_settings())


app = Celery(
    "boxtasks",
    include=["tasks.kinds", "tasks.signals", "tasks.tasklog", "tasks.control", "tasks.schedules"],
    set_as_current=False,
)
# add_defaults takes a callable: the settings are read when the config is first needed, not at import.
app.add_defaults(_config)
app.steps["worker"].add(PoolWatch)
# `celery -A tasks flower` with no authentication exits before it serves (tasks/flower_auth.py).
signals.import_modules.connect(refuse_open_flower, sender=app, weak=False)
app.steps["consumer"].add(Flow)
