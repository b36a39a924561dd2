"""App operations end to end: hosting functions on a LocalContext, a real dockerd, real MariaDB."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hosting import (
    AddonNotProvidedError,
    ImageError,
    InstallState,
    LocationConflictError,
    ManifestError,
    NotFoundError,
    OptionsError,
    PortConflictError,
    PortError,
    ResourceError,
    StateConflictError,
)
from hosting.apps import lifecycle
from hosting.apps import state as appstate
from hosting.errors import HealthError
from models import AppAddon, PortBinding, PortReservation
from tests.appkit import MIB, Kit, free_port, kit, manifest, new_app_id, run_threads

pytestmark = [pytest.mark.docker, pytest.mark.mariadb]
__all__ = ["kit"]  # the fixture, imported for this module


def _cgroup_limits(k: Kit, container_id: str) -> dict[str, str]:
    """CPU and memory limits as the container's own cgroup files say (v2 or v1)."""
    v2 = k.exec(container_id, "test -f /sys/fs/cgroup/cgroup.controllers && echo 2 || echo 1") == "2"
    if v2:
        max_, weight = k.exec(container_id, "cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/cpu.weight").split("\n")
        quota, period = max_.split()
        memory = k.exec(container_id, "cat /sys/fs/cgroup/memory.max")
        return {"quota": quota, "period": period, "memory": memory, "weight": weight}
    out = k.exec(
        container_id,
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us "
        "/sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.shares",
    ).split("\n")
    return {"quota": out[0], "period": out[1], "memory": out[2], "shares": out[3]}


def install(k: Kit, app_id: str, **overrides: object) -> dict[str, object]:
    options: dict[str, object] = {"manifest": manifest(k.dockerd.image), "location": app_id}
    options.update(overrides)
    return k.run(lifecycle.install, app_id, **options)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- install, in full


def test_install_applies_ports_resources_env_addons_then_uninstall_removes_all(kit: Kit) -> None:
    app_id = new_app_id()
    with kit.ctx(app_id) as ctx:
        result = lifecycle.install(
            ctx,
            app_id,
            box=kit.box,
            manifest=manifest(kit.dockerd.image),
            location=app_id,
            ports={"SSH_PORT": 41022, "RANGE_PORT": 41100, "VOICE_PORT": 41200},
            cpuShares=300,
            cpuQuota=50,
            memoryLimit=64 * MIB,
            env={"GREETING": "hello"},
        )
    percents = [p for p, _ in ctx.reports]
    assert percents == sorted(percents) and percents[-1] == 100
    assert result["installationState"] == "installed" and result["runState"] == "running"
    assert result["ports"] == {"SSH_PORT": 41022, "RANGE_PORT": 41100, "VOICE_PORT": 41200}

    cid = str(result["containerId"])
    info = kit.inspect(cid)
    assert info["State"]["Running"]
    host = info["HostConfig"]
    assert host["PortBindings"] == {
        "2222/tcp": [{"HostIp": "", "HostPort": "41022"}],
        "7000/tcp": [{"HostIp": "", "HostPort": "41100"}],
        "7001/tcp": [{"HostIp": "", "HostPort": "41101"}],
        "7002/tcp": [{"HostIp": "", "HostPort": "41102"}],
        "9987/udp": [{"HostIp": "", "HostPort": "41200"}],
    }
    assert (host["CpuShares"], host["CpuPeriod"], host["CpuQuota"]) == (300, 100_000, 50_000)
    assert host["Memory"] == 64 * MIB and host["MemorySwap"] == 64 * MIB
    assert host["NetworkMode"] == "none"
    labels = info["Config"]["Labels"]
    assert labels["boxtasks.app_id"] == app_id and labels["boxtasks.manifest_id"] == "io.boxtasks.testapp"
    assert labels["boxtasks.task_id"] == ctx.task_id
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    assert env["GREETING"] == "hello" and env["SSH_PORT"] == "41022" and env["BOX_APP_ID"] == app_id
    assert env["CLOUDRON_MAIL_SMTP_USERNAME"] == f"{app_id}.app@box.test"
    assert len(env["CLOUDRON_MAIL_SMTP_PASSWORD"]) >= 24
    assert "CLOUDRON_MAIL_IMAP_SERVER" not in env, "recvmail is skipped on a server that receives no mail"

    cgroup = _cgroup_limits(kit, cid)
    assert (cgroup["quota"], cgroup["period"], cgroup["memory"]) == ("50000", "100000", str(64 * MIB))
    assert cgroup.get("shares", "300") == "300"

    # localstorage: the app's data dir under the settings' data dir, mounted at /app/data.
    kit.exec(cid, "echo kept > /app/data/note")
    assert (kit.box.app_dir(app_id) / "data" / "note").read_text() == "kept\n"

    assert len(kit.rows(PortReservation, app_id)) == 5  # 1 + 3 + 1 ports
    assert {r.addon for r in kit.rows(AppAddon, app_id)} == {"sendmail"}
    assert [e.data["ok"] for e in kit.events("app.install") if e.source["appId"] == app_id] == [True]

    kit.run(lifecycle.uninstall, app_id)
    assert kit.leftovers(app_id) == dict.fromkeys(kit.leftovers(app_id), 0)
    assert [e.source["appId"] for e in kit.events("app.uninstall")].count(app_id) == 1


def test_a_packagers_manifest_runs_the_installers_image_on_its_default_ports(kit: Kit) -> None:
    """No dockerImage (a packager's file): the installer's image; ports left out take their defaultValue."""
    app_id, game, voice = new_app_id(), free_port(), free_port()
    doc = {k: v for k, v in manifest("unused").items() if k != "dockerImage"}
    doc["manifestVersion"] = 2
    doc["postInstallMessage"] = "kept, and shown back"
    doc["tcpPorts"] = {
        "GAME_PORT": {"title": "game", "containerPort": 7777, "defaultValue": game},
        "RCON_PORT": {"title": "rcon", "containerPort": 7778, "defaultValue": free_port(), "enabledByDefault": False},
    }
    doc["udpPorts"] = {"VOICE_PORT": {"title": "voice", "containerPort": 9987, "defaultValue": voice}}
    result = kit.run(lifecycle.install, app_id, manifest=doc, image=kit.dockerd.image, location=app_id)
    assert result["ports"] == {"GAME_PORT": game, "VOICE_PORT": voice}
    info = kit.inspect(str(result["containerId"]))
    assert info["Config"]["Image"] == kit.dockerd.image
    bound = {k: v[0]["HostPort"] for k, v in info["HostConfig"]["PortBindings"].items()}
    assert bound == {"7777/tcp": str(game), "9987/udp": str(voice)}
    stored = kit.app(app_id)
    assert stored is not None and stored.manifest == {**doc, "dockerImage": kit.dockerd.image}
    kit.run(lifecycle.uninstall, app_id)
    assert kit.leftovers(app_id) == dict.fromkeys(kit.leftovers(app_id), 0)


def test_an_app_is_running_only_once_it_answers_its_health_check(kit: Kit) -> None:
    """No network here: the check runs inside the container (busybox wget), as it does for any app without one."""
    app_id = new_app_id()
    healthy = manifest(kit.dockerd.image, healthCheckPath="/healthz")
    install(kit, app_id, manifest=healthy, env={"SERVE_HTTP": "1"})
    app = kit.app(app_id)
    assert (app.installation_state, app.run_state, app.error) == ("installed", "running", None)
    kit.run(lifecycle.restart, app_id)  # a restart waits for it again
    assert kit.app(app_id).run_state == "running"

    wrong = new_app_id()
    path = manifest(kit.dockerd.image, healthCheckPath="/missing")
    with pytest.raises(
        HealthError, match=r"did not answer GET /missing on port 8080 with 2xx within 10s \(last: .*404"
    ):
        install(kit, wrong, manifest=path, env={"SERVE_HTTP": "1"})
    failed = kit.app(wrong)
    assert failed.installation_state == "error" and "GET /missing" in failed.error["message"]

    silent = new_app_id()  # serves nothing at all
    with pytest.raises(HealthError, match="did not answer GET /healthz"):
        install(kit, silent, manifest=healthy)
    assert kit.app(silent).installation_state == "error"
    for done in (app_id, wrong, silent):
        kit.run(lifecycle.uninstall, done)


def test_recvmail_is_set_up_where_the_server_receives_mail(kit: Kit) -> None:
    kit.box.settings = kit.settings.model_copy(update={"receives_mail": True})
    app_id = new_app_id()
    result = install(kit, app_id)
    env = dict(e.split("=", 1) for e in kit.inspect(str(result["containerId"]))["Config"]["Env"])
    assert env["CLOUDRON_MAIL_IMAP_USERNAME"] == f"{app_id}.app@box.test"
    assert {r.addon for r in kit.rows(AppAddon, app_id)} == {"sendmail", "recvmail"}
    kit.run(lifecycle.uninstall, app_id)
    assert kit.rows(AppAddon, app_id) == []


# ---------------------------------------------------------------------------- the lifecycle


def test_configure_start_stop_restart_repair(kit: Kit) -> None:
    app_id = new_app_id()
    first = install(kit, app_id, ports={"SSH_PORT": 42022})
    cid = str(first["containerId"])
    password = kit.rows(AppAddon, app_id)[0].config["password"]

    # Limits alone change in place: same container, new cgroup values.
    kit.run(lifecycle.configure, app_id, cpuQuota=25, memoryLimit=48 * MIB, cpuShares=1024)
    assert kit.app(app_id).container_id == cid
    cgroup = _cgroup_limits(kit, cid)
    assert (cgroup["quota"], cgroup["memory"]) == ("25000", str(48 * MIB))
    assert kit.inspect(cid)["HostConfig"]["CpuShares"] == 1024

    # New ports: a new container, old reservations gone, credentials kept.
    kit.run(lifecycle.configure, app_id, ports={"SSH_PORT": 42023, "VOICE_PORT": 42024}, env={"MODE": "test"})
    cid2 = str(kit.app(app_id).container_id)
    assert cid2 != cid and kit.inspect(cid2)["HostConfig"]["PortBindings"] == {
        "2222/tcp": [{"HostIp": "", "HostPort": "42023"}],
        "9987/udp": [{"HostIp": "", "HostPort": "42024"}],
    }
    assert sorted((r.type, r.port) for r in kit.rows(PortReservation, app_id)) == [("tcp", 42023), ("udp", 42024)]
    assert kit.rows(AppAddon, app_id)[0].config["password"] == password
    assert "MODE=test" in kit.inspect(cid2)["Config"]["Env"]
    assert kit.inspect(cid2)["HostConfig"]["Memory"] == 48 * MIB

    kit.run(lifecycle.stop, app_id)
    assert not kit.inspect(cid2)["State"]["Running"] and kit.app(app_id).run_state == "stopped"
    kit.run(lifecycle.start, app_id)
    assert kit.inspect(cid2)["State"]["Running"] and kit.app(app_id).run_state == "running"
    started = kit.inspect(cid2)["State"]["StartedAt"]
    kit.run(lifecycle.restart, app_id)
    assert kit.inspect(cid2)["State"]["Running"] and kit.inspect(cid2)["State"]["StartedAt"] != started

    # Repair rebuilds from the record, even when the container was removed behind our back.
    kit.dockerd.client.containers.get(cid2).remove(force=True)
    kit.run(lifecycle.repair, app_id)
    app = kit.app(app_id)
    assert app.installation_state == "installed" and app.container_id not in (cid, cid2)
    assert kit.inspect(app.container_id)["State"]["Running"]
    assert len(kit.containers(app_id)) == 1

    # A stopped app stays stopped through a configure.
    kit.run(lifecycle.stop, app_id)
    kit.run(lifecycle.configure, app_id, env={})
    assert not kit.inspect(kit.app(app_id).container_id)["State"]["Running"]

    actions = [e.action for e in kit.events("app.configure") + kit.events("app.stop") if e.source["appId"] == app_id]
    assert len(actions) == 5
    kit.run(lifecycle.uninstall, app_id)
    assert kit.leftovers(app_id) == dict.fromkeys(kit.leftovers(app_id), 0)


# ---------------------------------------------------------------------------- races, states, failures


def test_two_installs_racing_for_one_port_exactly_one_wins(kit: Kit) -> None:
    for round_, port in enumerate((43000, 43100, 43200)):
        a, b = new_app_id(f"race{round_}a"), new_app_id(f"race{round_}b")
        # b asks for a range that overlaps a's single port at its last position.
        results = run_threads(
            lambda a=a, port=port: install(kit, a, ports={"SSH_PORT": port}),
            lambda b=b, port=port: install(kit, b, ports={"RANGE_PORT": port - 2}),
        )
        winners = [r for r in results if isinstance(r, dict)]
        losers = [r for r in results if isinstance(r, BaseException)]
        assert len(winners) == 1 and len(losers) == 1, results
        err = losers[0]
        assert isinstance(err, PortConflictError), err
        winner = str(winners[0]["appId"])
        loser = b if winner == a else a
        assert f"port {port}/tcp" in str(err) and f"used by app {winner}" in str(err)
        assert kit.leftovers(loser) == dict.fromkeys(kit.leftovers(loser), 0)
        assert kit.inspect(str(winners[0]["containerId"]))["State"]["Running"]
        kit.run(lifecycle.uninstall, winner)


def test_operation_refused_in_the_wrong_state(kit: Kit) -> None:
    app_id = new_app_id()
    install(kit, app_id)
    with pytest.raises(StateConflictError, match=r"cannot install app .*: it is installed"):
        install(kit, app_id)

    # Another task (a backup) has the app: start is refused and the state is left alone.
    with kit.ctx(app_id) as ctx, ctx.fenced() as conn:
        appstate.begin(conn, app_id, "backup")
    with pytest.raises(StateConflictError, match="it is pending_backup") as caught:
        kit.run(lifecycle.start, app_id)
    assert caught.value.state == "pending_backup"
    assert kit.app(app_id).installation_state == InstallState.PENDING_BACKUP

    # repair is allowed from any state.
    kit.run(lifecycle.repair, app_id)
    assert kit.app(app_id).installation_state == "installed"
    kit.run(lifecycle.uninstall, app_id)
    with pytest.raises(NotFoundError):
        kit.run(lifecycle.stop, app_id)


def test_failed_install_leaves_error_and_is_reissued_after_the_image_is_made(kit: Kit) -> None:
    app_id = new_app_id()
    missing = "127.0.0.1:5999/boxtasks-test/missing:1.0.0"  # nothing listens there: the pull fails fast
    options = {"manifest": manifest(missing), "location": app_id, "ports": {"SSH_PORT": 44022}}
    with pytest.raises(ImageError, match=r"image 127\.0\.0\.1:5999/boxtasks-test/missing:1\.0\.0 .*pulling it failed"):
        kit.run(lifecycle.install, app_id, **options)
    app = kit.app(app_id)
    assert app.installation_state == "error" and app.error_operation == "install"
    assert "missing:1.0.0" in app.error["message"] and app.error["kind"] == "ImageError"
    assert [e.data["ok"] for e in kit.events("app.install") if e.source["appId"] == app_id] == [False]
    assert kit.containers(app_id) == []

    # Only a retry of install (or repair/uninstall) may start from this error.
    with pytest.raises(StateConflictError, match="failed install"):
        kit.run(lifecycle.start, app_id)

    kit.dockerd.client.images.get(kit.dockerd.image).tag("127.0.0.1:5999/boxtasks-test/missing", "1.0.0")
    try:
        result = kit.run(lifecycle.install, app_id, **options)
        assert result["installationState"] == "installed"
        app = kit.app(app_id)
        assert app.error is None and app.error_operation is None
        assert kit.inspect(app.container_id)["State"]["Running"]
        assert len(kit.rows(PortReservation, app_id)) == 1
        kit.run(lifecycle.uninstall, app_id)
    finally:
        kit.dockerd.client.images.remove(missing)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        (
            {"manifest": {"id": "Not_Reverse", "httpPort": 0}},
            ManifestError,
            r"invalid manifest: id: must be a reverse-domain.*version: missing.*httpPort: .*greater than",
        ),
        # The task checks again what the front door checked (the box may have changed in between).
        (
            {"manifest": {**manifest("busybox"), "addons": {"localstorage": {}, "ldap": {}, "oidc": {}}}},
            AddonNotProvidedError,
            r"io.boxtasks.testapp needs addon\(s\) this server does not provide: ldap, oidc \(provided: ",
        ),
        ({"manifest": {**manifest("x"), "dockerImage": None}}, ManifestError, "no image to run"),
        ({"ports": {"SSH_PORT": None, "RANGE_PORT": 45010}, "image": "Bad Image"}, ManifestError, "dockerImage: must"),
        ({"ports": {"SSH_PORT": 22}}, PortError, "port 22 is reserved for SSH"),
        ({"ports": {"SSH_PORT": 1000}}, PortError, "host port 1000 is outside 1024-65535"),
        ({"ports": {"RANGE_PORT": 65534}}, PortError, r"65534-65536 \(3 ports\) is outside"),
        ({"ports": {"RANGE_PORT": 3305}}, PortError, "port 3306 is reserved for MySQL"),
        ({"ports": {"HTTP_PORT": 45000}}, PortError, "HTTP_PORT: the manifest declares no such port"),
        ({"ports": {"SSH_PORT": 45001, "RANGE_PORT": 45000}}, PortError, "overlaps"),
        ({"cpuShares": 1}, ResourceError, "cpuShares 1 is outside 2-262144"),
        ({"cpuQuota": 100_000}, ResourceError, r"cpuQuota 100000 is outside 1-\d+"),
        ({"memoryLimit": 4 * MIB}, ResourceError, "memoryLimit 4194304 bytes is below 33554432"),
        ({"env": {"BOX_APP_ID": "x"}}, OptionsError, "set by the platform"),
        ({"env": {"SSH_PORT": "1"}}, OptionsError, "set it through ports"),
        ({"port": {"SSH_PORT": 45002}}, OptionsError, "port: Extra inputs are not permitted"),
        ({"location": "Not A Host"}, OptionsError, "bad location"),
    ],
)
def test_bad_install_input_is_refused_and_leaves_nothing(
    kit: Kit, options: dict[str, object], error: type[Exception], match: str
) -> None:
    app_id = new_app_id()
    with pytest.raises(error, match=match):
        install(kit, app_id, **options)
    assert kit.leftovers(app_id) == dict.fromkeys(kit.leftovers(app_id), 0)


def test_bad_input_to_an_installed_app_changes_nothing(kit: Kit) -> None:
    other, app_id = new_app_id(), new_app_id()
    install(kit, other, ports={"SSH_PORT": 46022})
    install(kit, app_id, ports={"SSH_PORT": 46023})
    before = (kit.app(app_id), kit.rows(PortBinding, app_id), kit.rows(PortReservation, app_id))

    with pytest.raises(PortConflictError, match=f"port 46022/tcp for SSH_PORT is already used by app {other}"):
        kit.run(lifecycle.configure, app_id, ports={"SSH_PORT": 46022})
    with pytest.raises(PortError, match="reserved for PostgreSQL"):
        kit.run(lifecycle.configure, app_id, ports={"SSH_PORT": 5432})
    with pytest.raises(ResourceError, match="memoryLimit"):
        kit.run(lifecycle.configure, app_id, memoryLimit=10**15)
    with pytest.raises(OptionsError, match="nothing to configure"):
        kit.run(lifecycle.configure, app_id)
    for op in (lifecycle.start, lifecycle.stop, lifecycle.restart, lifecycle.repair, lifecycle.uninstall):
        with pytest.raises(OptionsError, match="Extra inputs are not permitted"):
            kit.run(op, app_id, force=True)
    with pytest.raises(LocationConflictError, match=f"already used by app {app_id}"):
        install(kit, new_app_id(), location=app_id)
    with kit.ctx("dots") as ctx, pytest.raises(OptionsError, match="bad app id"):
        lifecycle.install(ctx, "../etc", box=kit.box, manifest=manifest(kit.dockerd.image), location="dots")

    assert (kit.app(app_id), kit.rows(PortBinding, app_id), kit.rows(PortReservation, app_id)) == before
    assert kit.inspect(before[0].container_id)["State"]["Running"]
    with kit.engine.connect() as conn:
        assert conn.execute(select(PortReservation.app_id).where(PortReservation.port == 46022)).scalar() == other
    kit.run(lifecycle.uninstall, app_id)
    kit.run(lifecycle.uninstall, other)


def test_the_registry_path_the_task_layer_takes(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    """`operations.run(ctx, app_id, name, options)` with JSON options and the box made from settings."""
    import json

    from config import get_settings
    from hosting import operations
    from hosting.box import default_box

    monkeypatch.setenv("BOXTASKS_DOCKER_HOST", kit.dockerd.base_url)
    monkeypatch.setenv("BOXTASKS_DATA_DIR", str(kit.data_dir))
    monkeypatch.setenv("BOXTASKS_APP_NETWORK", "none")
    monkeypatch.setenv("BOXTASKS_APP_STOP_TIMEOUT_SECONDS", "3")
    get_settings.cache_clear()
    default_box.cache_clear()
    app_id = new_app_id()
    options = json.loads(json.dumps({"manifest": manifest(kit.dockerd.image), "location": app_id}))
    try:
        for name, opts in (("install", options), ("stop", {}), ("start", {}), ("uninstall", {})):
            with kit.ctx(app_id) as ctx:
                result = operations.run(ctx, app_id, name, opts)
            assert json.loads(json.dumps(result)) == result  # a task result Celery can store
        assert kit.leftovers(app_id) == dict.fromkeys(kit.leftovers(app_id), 0)
    finally:
        default_box().docker.close()
        get_settings.cache_clear()
        default_box.cache_clear()
