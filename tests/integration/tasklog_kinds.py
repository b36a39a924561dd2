"""A task kind for tests/integration/test_task_logs.py: it logs, from its thread and a helper thread.

Workers load it with `celery -A tasks worker -I tests.integration.tasklog_kinds`.
"""

from __future__ import annotations

import logging
import threading
import time

from tasks.locking import locked_task
from tasks.runner import RunContext

logger = logging.getLogger("tests.tasklog_kinds")


@locked_task(kind="t_logger", plan={"platform": "S", "app:{app_id}": "X"}, queue="apptask")
def t_logger(ctx: RunContext, *, app_id: str, lines: int = 5, pause: float = 0.0, then_sleep: float = 0.0) -> str:
    for i in range(1, lines + 1):
        logger.info("%s says hello %d", app_id, i)
        time.sleep(pause)
    helper = threading.Thread(target=lambda: logger.warning("%s helper thread done", app_id))
    helper.start()
    helper.join()
    time.sleep(then_sleep)
    logger.info("%s finished", app_id)
    return "ok"
