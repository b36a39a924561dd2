"""Secrets planted through the real API and CLI never come back out: not in a read route's body for
any token scope, not in the CLI's `--json` or tables, not in the Celery message the broker holds,
not in any log the run wrote (a database refusal included); and the worker still gets them whole.

Real uvicorn, real `boxtasks` subprocesses, real RabbitMQ (this session's vhost), MariaDB and SQLite.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from kombu.connection import Connection
from kombu.entity import Queue
from sqlalchemy import Engine, insert, text

from frontdoor import tokens
from hosting.backups.appbackup import app_config
from lockman import LockManager
from models import App, AppAddon, Archive, Backup, Event, Notification, TaskState, get_engine, records
from models.secrets import MARKER, describe_db_error, is_secret_name, redact
from tasks import logstore
from tests.apiserver import running_api
from tests.cli_run import Result, boxtasks
from tests.dockerd import Dockerd
from tests.e2e.conftest import e2e_env, start_worker
from tests.e2e.harness import Env, Worker, purge_queues, wait_state
from tests.services import fresh_database

__all__ = ["e2e_env", "start_worker"]  # the fixtures, imported for this module

MANIFEST = {"id": "io.example.secret", "version": "1.0.0", "dockerImage": "busybox:latest", "httpPort": 8080}
#: Every read route, by path template ({app}, {task}, {backup} filled in per test).
READ_ROUTES = (
    "/api/v1/apps",
    "/api/v1/apps/{app}",
    "/api/v1/tasks",
    "/api/v1/tasks?limit=1000",
    "/api/v1/backups",
    "/api/v1/backups/{backup}",
    "/api/v1/archives",
    "/api/v1/eventlog",
    "/api/v1/notifications",
    "/api/v1/locks",
    "/api/v1/platform/capabilities",
    "/metrics",
)


def planted(what: str) -> str:
    return f"planted-{what}-{uuid.uuid4().hex}"


# ---------------------------------------------------------------------------- the rule itself (no services)


def test_the_rule_masks_values_keeps_names_and_scrubs_free_text() -> None:
    secret, mail = planted("env"), planted("mail")
    doc: dict[str, Any] = {
        "app_id": "a1",
        "options": {"env": {"DB_PASSWORD": secret, "LOG_LEVEL": "info"}, "ports": {"API_KEY_PORT": 2222}},
        "sendmail": {"username": "blog.app@example.com", "password": mail},
        "error": f"container refused {secret} and {mail}",
    }
    shown = redact(doc)
    assert shown["options"]["env"] == {"DB_PASSWORD": MARKER, "LOG_LEVEL": MARKER}
    assert shown["options"]["ports"] == {"API_KEY_PORT": 2222}  # a port is not a secret
    assert shown["sendmail"] == {"username": "blog.app@example.com", "password": MARKER}
    assert shown["error"] == f"container refused {MARKER} and {MARKER}"
    assert doc["options"]["env"]["DB_PASSWORD"] == secret  # a copy: the record is untouched
    assert [n for n in ("DB_PASSWORD", "apiKey", "smtp_pass", "backupId", "keyboard") if is_secret_name(n)] == [
        "DB_PASSWORD",
        "apiKey",
        "smtp_pass",
    ]


def test_a_database_error_is_described_without_the_values_it_quotes() -> None:
    import pymysql

    secret = planted("dup")
    err = pymysql.err.IntegrityError(1062, f"Duplicate entry '{secret}' for key 'PRIMARY'")
    described = describe_db_error(err)
    assert secret not in described and described.startswith("IntegrityError (1062): Duplicate entry")


# ---------------------------------------------------------------------------- API, CLI, broker, logs


@dataclass
class Planted:
    """What one test planted, and where it left its logs."""

    env: Env
    logs: Path
    secrets: list[str] = field(default_factory=list)
    cli_stderr: list[str] = field(default_factory=list)

    def plant(self, what: str) -> str:
        secret = planted(what)
        self.secrets.append(secret)
        return secret

    def assert_absent(self, text: str, where: str) -> None:
        leaked = [s for s in self.secrets if s in text]
        assert not leaked, f"{where} shows {leaked}:\n{text[:3000]}"

    def cli(self, *args: str) -> Result:
        result = boxtasks(*args, env=self.env.variables())
        self.cli_stderr.append(result.err)
        return result


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test's own: the apps, addons and the trigger it plants stay out of other tests."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def box(backend_url: str, rabbitmq_url: str, tmp_path: Path) -> Iterator[Planted]:
    env = Env(
        database_url=backend_url,
        broker_url=rabbitmq_url,
        data_dir=tmp_path / "data",
        extra={"BOXTASKS_LOCK_ROW": f"s_{uuid.uuid4().hex[:10]}"},
    )
    env.apply_to_this_process()
    manager = LockManager.from_settings()
    manager.ensure_row()
    manager.dispose()
    purge_queues()
    logs = tmp_path / "logs"
    logs.mkdir()
    yield Planted(env, logs)
    purge_queues()


def _seed_app(engine: Engine, box: Planted, app_id: str) -> tuple[str, str]:
    """An installed app as its install task leaves it: env, mail credentials, a backup, an archive,
    and an eventlog entry, a notification and a failed task whose texts quote a secret."""
    env_secret, mail_secret = box.plant("seed-env"), box.plant("seed-mail")
    db_secret = box.plant("seed-db")  # a database addon's password, as `hosting.apps.databases` keeps it
    quoted = box.plant("quoted")
    with engine.begin() as conn:
        conn.execute(
            insert(App).values(
                id=app_id,
                app_store_id=MANIFEST["id"],
                manifest=MANIFEST,
                version="1.0.0",
                location=f"{app_id}.example",
                installation_state="installed",
                run_state="running",
                env={"DB_PASSWORD": env_secret, "QUOTED": quoted},
                error={"message": f"earlier failure quoting {quoted}"},
            )
        )
        conn.execute(
            insert(AppAddon).values(
                app_id=app_id, addon="sendmail", config={"username": "x.app@example.com", "password": mail_secret}
            )
        )
        db_config = {"database": "app_x", "username": "app_x", "password": db_secret, "host": "mysql", "port": 3306}
        conn.execute(insert(AppAddon).values(app_id=app_id, addon="mysql", config=db_config))
        backup_id = f"app_{app_id}_20260101T000000Z_v1.0.0"
        config = app_config(conn, app_id).to_json()
        conn.execute(
            insert(Backup).values(
                id=backup_id,
                path=f"apps/{app_id}/{backup_id}.tar.gz",
                type="app",
                app_id=app_id,
                version="1.0.0",
                state="normal",
                format="tgz",
                depends_on=[],
                app_config=config,
            )
        )
        conn.execute(insert(Archive).values(id=f"arch-{app_id}", backup_id=backup_id, app_id=app_id, app_config=config))
        event = conn.execute(
            insert(Event).values(
                action="app.configure",
                source={"appId": app_id},
                data={"ok": False, "error": f"refused {env_secret}", "password": mail_secret},
            )
        )
        conn.execute(
            insert(Notification).values(
                event_id=event.inserted_primary_key[0],  # type: ignore[index]
                title=f"App {app_id} failed",
                message=f"it said {mail_secret}; mysql://app_x:{db_secret}@mysql:3306/app_x refused",
                acknowledged=False,
            )
        )
    failed = records.create(
        engine, kind="apptask", queue="apptask", args={"app_id": app_id, "operation": "repair"}, app_id=app_id
    )
    records.finish(engine, failed, TaskState.FAILED, message=f"Failed: {quoted}", error=f"Boom: {env_secret}")
    return backup_id, failed


def _refuse_task_rows(engine: Engine, *, on: bool) -> None:
    """Make the database refuse every new task row (a trigger), or stop refusing."""
    with engine.begin() as conn:
        if engine.url.get_backend_name() == "sqlite":
            conn.execute(text("DROP TRIGGER IF EXISTS refuse_tasks"))
            if on:
                conn.execute(
                    text(
                        "CREATE TRIGGER refuse_tasks BEFORE INSERT ON tasks "
                        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                    )
                )
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS refuse_tasks"))
            if on:
                conn.execute(
                    text(
                        "CREATE TRIGGER refuse_tasks BEFORE INSERT ON tasks FOR EACH ROW "
                        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test'"
                    )
                )


def _broker_messages(url: str, queue: str) -> list[Any]:
    """Every message waiting in `queue`, taken off it (no worker runs here)."""
    taken = []
    with Connection(url) as conn:  # type: ignore[no-untyped-call]
        bound = Queue(queue, channel=conn.default_channel)  # type: ignore[no-untyped-call]
        while (message := bound.get(no_ack=True)) is not None:  # type: ignore[no-untyped-call]
            taken.append(message)
    return taken


def test_planted_secrets_never_come_out(box: Planted, rabbitmq_url: str) -> None:
    engine = get_engine()
    toks = {scope: tokens.create(engine, name=f"secrets {scope}", scopes=[scope])[1] for scope in tokens.SCOPES}
    app_id = f"app{uuid.uuid4().hex[:8]}"
    backup_id, failed_task = _seed_app(engine, box, app_id)

    with running_api(box.env, box.logs) as api:
        # Planted through the API: an install and a configure with env secrets.
        install_secret, configure_secret = box.plant("install"), box.plant("configure")
        new_app = f"app{uuid.uuid4().hex[:8]}"
        response = api.post(
            "/api/v1/apps/install",
            toks["write"],
            json={
                "manifest": MANIFEST,
                "location": f"{new_app}.example",
                "appId": new_app,
                "env": {"DB_PASSWORD": install_secret, "API_TOKEN": install_secret},
            },
        )
        assert response.status_code == 202, response.text
        install_task = response.json()["task_id"]
        response = api.post(
            f"/api/v1/apps/{app_id}/configure", toks["write"], json={"env": {"DB_PASSWORD": configure_secret}}
        )
        assert response.status_code == 202, response.text
        configure_task = response.json()["task_id"]

        # ... and through the CLI.
        cli_secret = box.plant("cli")
        done = box.cli("app", "configure", app_id, "--env", f"SECRET_KEY={cli_secret}", "--json")
        assert done.code == 0, done.err
        cli_task = done.json()["task_id"]

        # A message quoting a secret, on a task the locks view shows.
        records.set_message(engine, configure_task, f"Waiting, holding {configure_secret}")
        manager = LockManager.from_settings()
        try:
            manager.try_acquire(configure_task, {f"app:{app_id}": "X"}, label="apptask")
        finally:
            manager.dispose()

        # The database refuses a write whose parameters carry a secret: API and CLI both.
        refused_secret, refused_cli_secret = box.plant("refused"), box.plant("refused-cli")
        _refuse_task_rows(engine, on=True)
        try:
            response = api.post(
                f"/api/v1/apps/{app_id}/configure", toks["write"], json={"env": {"DB_PASSWORD": refused_secret}}
            )
            assert response.status_code in (500, 503), response.text
            assert response.json()["error"] in {"database_error", "database_unavailable"}
            box.assert_absent(response.text, "the refusal's error body")
            refused = box.cli("app", "configure", app_id, "--env", f"DB_PASSWORD={refused_cli_secret}")
            assert refused.code == 1 and "database error" in refused.err, refused.err
            assert refused.err.count("\n") == 1, refused.err
        finally:
            _refuse_task_rows(engine, on=False)
        malformed = box.cli("app", "configure", app_id, "--env", cli_secret)
        assert malformed.code == 1 and "--env takes NAME=VALUE" in malformed.err

        # Log lines that quote a secret (an exception's text, a dump tool's stderr), as a worker writes them.
        at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        for seq, (task, quoted) in enumerate([(install_task, install_secret), (failed_task, box.secrets[0])], 1):
            logstore.append(
                engine, task, [logstore.Line(seq, at, "ERROR", f"boom: {quoted}")], logstore.Bounds(500, 2000)
            )
        # (Following a task streams until it ends: only the failed one has.)
        for task, query in [(install_task, ""), (failed_task, ""), (failed_task, "?follow=1")]:
            response = requests.get(
                f"{api.url}/api/v1/tasks/{task}/log{query}",
                headers={"Authorization": f"Bearer {toks['read']}", "Accept": "text/plain"},
                timeout=60,
            )
            assert response.status_code == 200 and "boom: " + MARKER in response.text, response.text
            box.assert_absent(response.text, f"the log of {task}{query}")

        # Every read route, for every scope.
        tasks = [install_task, configure_task, cli_task, failed_task]
        routes = [r.format(app=app_id, backup=backup_id) for r in READ_ROUTES]
        routes += [f"/api/v1/apps/{new_app}"] if api.get(f"/api/v1/apps/{new_app}", toks["read"]).ok else []
        routes += [f"/api/v1/tasks/{t}" for t in tasks] + [f"/api/v1/tasks/{t}/log" for t in tasks]
        for scope, token in toks.items():
            for route in routes:
                response = api.get(route, token)
                assert response.status_code == 200, (scope, route, response.text)
                box.assert_absent(response.text, f"GET {route} ({scope})")

        # Redacted, not dropped: the names stay, so a user sees what is set.
        shown = api.get(f"/api/v1/tasks/{install_task}", toks["read"]).json()
        assert shown["args"]["options"]["env"] == {"DB_PASSWORD": MARKER, "API_TOKEN": MARKER}
        backup = api.get(f"/api/v1/backups/{backup_id}", toks["read"]).json()
        assert backup["app_config"]["env"] == {"DB_PASSWORD": MARKER, "QUOTED": MARKER}
        failed = api.get(f"/api/v1/tasks/{failed_task}", toks["read"]).json()
        assert failed["error"] == f"Boom: {MARKER}" and failed["message"] == f"Failed: {MARKER}"
        assert shown["args"]["options"]["manifest"] == MANIFEST

    # The CLI's read commands, JSON and tables.
    reads = [
        ("app", "list"),
        ("app", "show", app_id),
        ("task", "list", "--limit", "1000"),
        ("backup", "list"),
        ("backup", "show", backup_id),
        ("locks",),
        *[("task", "show", t) for t in tasks],
        *[("task", "logs", t) for t in tasks],
    ]
    for argv in reads:
        for json_flag in ((), ("--json",)):
            result = box.cli(*argv, *json_flag)
            assert result.code == 0, (argv, result.err)
            box.assert_absent(result.out, f"`boxtasks {' '.join((*argv, *json_flag))}`")
    shown_cli = box.cli("task", "show", cli_task, "--json").json()
    assert shown_cli["args"]["options"]["env"] == {"SECRET_KEY": MARKER}

    # The Celery messages as the broker holds them: masked args, names kept (Flower shows them).
    messages = {m.headers["id"]: m for m in _broker_messages(rabbitmq_url, "apptask")}
    assert {install_task, configure_task, cli_task} <= set(messages)
    for message in messages.values():
        box.assert_absent(message.body.decode() if isinstance(message.body, bytes) else str(message.body), "a message")
        box.assert_absent(json.dumps(message.headers, default=str), "a message's headers")
    _, kwargs, _ = json.loads(messages[install_task].body)
    assert kwargs["options"]["env"] == {"DB_PASSWORD": MARKER, "API_TOKEN": MARKER}

    # Every log the run wrote: the API server's (the refusal included) and the CLI's stderr.
    written = list(box.logs.rglob("*"))
    assert written, "the API server wrote no log"
    for path in written:
        if path.is_file():
            box.assert_absent(path.read_text(errors="replace"), f"log {path.name}")
    assert "database error in POST" in "".join(p.read_text() for p in written if p.is_file())
    box.assert_absent("\n".join(box.cli_stderr), "the CLI's stderr")


# ---------------------------------------------------------------------------- the worker still gets them


@pytest.mark.slow
@pytest.mark.rabbitmq
@pytest.mark.docker
def test_the_worker_still_gets_the_real_env(
    dockerd: Dockerd, e2e_env: Env, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    from tests.appkit import manifest

    e2e_env.extra.update(BOXTASKS_DOCKER_HOST=dockerd.base_url, BOXTASKS_APP_NETWORK="none")
    e2e_env.apply_to_this_process()
    worker = start_worker(concurrency=1)
    secret, changed = planted("worker"), planted("worker-configure")
    app_id = f"app{uuid.uuid4().hex[:8]}"
    doc = manifest(dockerd.image, tcpPorts={}, udpPorts={})
    install = _enqueue_app(app_id, "install", manifest=doc, location=f"{app_id}.example", env={"DB_PASSWORD": secret})
    done = wait_state(install, "succeeded", "failed", timeout=180)
    assert done.state == "succeeded", done.error
    env = _container_env(dockerd, app_id)
    assert env["DB_PASSWORD"] == secret
    mail_password = env["CLOUDRON_MAIL_SMTP_PASSWORD"]
    assert len(mail_password) >= 16

    configured = wait_state(_enqueue_app(app_id, "configure", env={"DB_PASSWORD": changed}), "succeeded", "failed")
    assert configured.state == "succeeded", configured.error
    assert _container_env(dockerd, app_id)["DB_PASSWORD"] == changed

    from frontdoor import queries

    for task_id in (install, configured.id):
        view = queries.get_task(get_engine(), task_id).model_dump_json()
        assert secret not in view and changed not in view and mail_password not in view
    for path in [worker.log, *tmp_path.rglob("*.log")]:
        logged = Path(path).read_text(errors="replace")
        assert secret not in logged and changed not in logged and mail_password not in logged, path
    wait_state(_enqueue_app(app_id, "uninstall"), "succeeded", "failed", timeout=120)


def _enqueue_app(app_id: str, operation: str, **options: Any) -> str:
    from tasks.client import enqueue

    return enqueue("apptask", {"app_id": app_id, "operation": operation, "options": options}, app_id=app_id)


def _container_env(dockerd: Dockerd, app_id: str) -> dict[str, str]:
    from hosting.apps.docker_engine import LABEL_APP_ID

    found = dockerd.client.containers.list(all=True, filters={"label": f"{LABEL_APP_ID}={app_id}"})
    assert found, f"no container for app {app_id}"
    return dict(item.split("=", 1) for item in found[0].attrs["Config"]["Env"])
