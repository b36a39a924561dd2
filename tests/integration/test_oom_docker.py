"""OOM kills of app containers, seen on the real engine's event stream, become one notification."""

from __future__ import annotations

import threading
import time

import pytest

from hosting import watch_oom
from hosting.apps import lifecycle
from hosting.events.notify import Outcome
from tests.appkit import MIB, Kit, SmtpSink, kit, manifest, new_app_id, smtp_sink

pytestmark = [pytest.mark.docker, pytest.mark.mariadb]
__all__ = ["kit", "smtp_sink"]  # fixtures, imported for this module


def test_oom_kill_raises_a_notification_and_no_email(kit: Kit, smtp_sink: SmtpSink) -> None:
    kit.box.settings = kit.settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": smtp_sink.port, "admin_emails": ["admin@box.test"]}
    )
    app_id = new_app_id("hog")
    seen: list[tuple[str, Outcome]] = []
    got_one = threading.Event()
    stop = threading.Event()

    def on_outcome(app: str, outcome: Outcome) -> None:
        seen.append((app, outcome))
        got_one.set()

    watcher = threading.Thread(
        target=watch_oom, args=(kit.box, kit.engine), kwargs={"duration": 120, "stop": stop, "on_outcome": on_outcome}
    )
    watcher.start()
    try:
        time.sleep(0.5)  # the stream is open before the container starts
        # The app allocates 128 MiB under a 32 MiB limit (the test image's HOG_MB): the kernel kills it.
        kit.run(
            lifecycle.install,
            app_id,
            manifest=manifest(kit.dockerd.image, memoryLimit=32 * MIB),
            location=app_id,
            memoryLimit=32 * MIB,
            env={"HOG_MB": "128"},
        )
        assert got_one.wait(60), "no OOM event within 60s"
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert not watcher.is_alive(), "the watcher did not stop when asked"

    app, outcome = seen[0]
    assert app == app_id and outcome.notified and outcome.emails == ()
    container = kit.app(app_id).container_id
    # Its restart policy brings the app back to be killed again: a loaded machine may see a second OOM
    # before the watcher stops. Each is in the eventlog; only the first is news (`repeat_after`).
    oom_apps = [e.source["app_id"] for e in kit.events("app.oom") if e.data["containerId"] == container]
    assert oom_apps and set(oom_apps) == {app_id}
    assert [a for a, o in seen if o.notified] == [app_id]
    titles = [n.title for n in kit.notifications() if n.event_id == outcome.event_id]
    assert titles == [f"App {app_id} ran out of memory"]
    assert smtp_sink.messages == []
    kit.run(lifecycle.uninstall, app_id)


def test_watcher_returns_after_its_duration(kit: Kit) -> None:
    assert watch_oom(kit.box, kit.engine, duration=1.0) == 0
