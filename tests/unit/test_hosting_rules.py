"""The pure parts of app hosting: manifest, ports, resources, options, the state table, the container spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from hosting import RESERVED_PORTS, STATE_TABLE, InstallState, ManifestError, PortError, ResourceError, parse_manifest
from hosting.apps.addons import env_for
from hosting.apps.container import AppSpec, create_kwargs
from hosting.apps.options import ConfigureOptions, InstallOptions, parse
from hosting.apps.ports import check_ports
from hosting.apps.resources import HostCapacity, Limits, check_limits
from hosting.apps.state import ANY_STATE
from hosting.errors import HostingError, InputError, OptionsError

MIB = 1024 * 1024
HOST = HostCapacity(ncpu=4, memory=8 * 1024 * MIB)


def _manifest(**overrides: object):
    doc: dict[str, object] = {
        "id": "io.example.app",
        "version": "2.0.0",
        "dockerImage": "registry.example.com/app:2.0.0",
        "httpPort": 8000,
        "tcpPorts": {"SSH_PORT": {"title": "SSH", "containerPort": 22}, "GAME": {"title": "g", "portCount": 10}},
        "udpPorts": {"DNS_PORT": {"title": "DNS", "containerPort": 53}},
        "addons": {"sendmail": {}},
        "author": "kept, though unused",
    }
    doc.update(overrides)
    return parse_manifest(doc)


def test_manifest_defaults_and_json() -> None:
    m = _manifest()
    assert m.tcp_ports["GAME"].port_count == 10 and m.tcp_ports["GAME"].container_port is None
    assert m.port_spec("DNS_PORT")[0] == "udp" and m.port_spec("NOPE") is None
    assert parse_manifest(m.model_dump_json(by_alias=True)).image == m.image


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dockerImage": "Not An Image"}, "dockerImage: must be a Docker image reference"),
        ({"version": "v1"}, "version: must be a semantic version"),
        ({"httpPort": 70000}, "httpPort: Input should be less than or equal to 65535"),
        ({"addons": {"no such": {}}}, "addons: 'no such' is not an addon name"),
        ({"tcpPorts": {"lower": {"title": "x"}}}, "'lower' is not an env var name"),
        ({"tcpPorts": {"P": {"title": "x", "portCount": 0}}}, "tcpPorts.P.portCount"),
        ({"tcpPorts": {"P": {"title": "x", "containerPort": 65535, "portCount": 2}}}, "passes 65535"),
        ({"tcpPorts": {"P": {"title": "x", "colour": 1}}}, "tcpPorts.P.colour: Extra inputs are not permitted"),
        ({"udpPorts": {"SSH_PORT": {"title": "x"}}}, "SSH_PORT declared in both tcpPorts and udpPorts"),
    ],
)
def test_manifest_errors_name_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        _manifest(**change)
    assert message in str(caught.value)
    assert isinstance(caught.value, InputError) and isinstance(caught.value, HostingError)


def test_ports_become_bindings_with_container_ports() -> None:
    bindings = check_ports(_manifest(), {"SSH_PORT": 2222, "GAME": 30000, "DNS_PORT": 5353})
    by_env = {b.env_var: b for b in bindings}
    assert by_env["SSH_PORT"].docker_ports() == {"22/tcp": 2222}
    assert by_env["DNS_PORT"].docker_ports() == {"53/udp": 5353}
    # No containerPort: the app listens on the host port itself.
    assert by_env["GAME"].docker_ports() == {f"{30000 + i}/tcp": 30000 + i for i in range(10)}
    assert check_ports(_manifest(), {}) == []


def test_every_port_problem_is_reported_at_once() -> None:
    with pytest.raises(PortError) as caught:
        check_ports(_manifest(), {"SSH_PORT": 443, "GAME": 3300, "DNS_PORT": 65536, "X": 5000})
    text = str(caught.value)
    assert "SSH_PORT: port 443 is reserved for HTTPS" in text
    assert "GAME: port 3306 is reserved for MySQL" in text  # inside the range 3300-3309
    assert "DNS_PORT: host port 65536 is outside 1024-65535" in text
    assert "X: the manifest declares no such port (declared: DNS_PORT, GAME, SSH_PORT)" in text


def test_reserved_ports_are_the_ones_the_platform_uses() -> None:
    for port in (22, 25, 53, 80, 443, 587, 993, 3306):
        assert port in RESERVED_PORTS


def test_tcp_and_udp_may_share_a_number_but_one_app_may_not_overlap_itself() -> None:
    assert len(check_ports(_manifest(), {"SSH_PORT": 5300, "DNS_PORT": 5300})) == 2
    with pytest.raises(PortError, match=r"20000-20009/tcp \(GAME\) overlaps 20005/tcp \(SSH_PORT\) of the same app"):
        check_ports(_manifest(), {"SSH_PORT": 20005, "GAME": 20000})


def test_limits_defaults_and_bounds() -> None:
    m = _manifest()
    limits = check_limits(m, HOST)
    assert limits == Limits(cpu_shares=512, cpu_quota=400, memory_limit=256 * MIB)
    assert limits.docker_kwargs() == {
        "cpu_shares": 512,
        "cpu_period": 100_000,
        "cpu_quota": 400_000,
        "mem_limit": 256 * MIB,
        "memswap_limit": 256 * MIB,
    }
    assert check_limits(m, HOST, cpu_quota=50, current=limits).docker_kwargs()["cpu_quota"] == 50_000
    assert check_limits(_manifest(memoryLimit=512 * MIB), HOST).memory_limit == 512 * MIB
    with pytest.raises(ResourceError) as caught:
        check_limits(m, HOST, cpu_shares=300_000, cpu_quota=0, memory_limit=1)
    text = str(caught.value)
    assert "cpuShares 300000 is outside 2-262144" in text
    assert "cpuQuota 0 is outside 1-400 (percent of one CPU; this host has 4 CPUs)" in text
    assert "memoryLimit 1 bytes is below 33554432 bytes (32 MiB" in text
    with pytest.raises(ResourceError, match="the app's manifest asks for at least that"):
        check_limits(_manifest(memoryLimit=512 * MIB), HOST, memory_limit=256 * MIB)
    with pytest.raises(ResourceError, match="more than the host has"):
        check_limits(m, HOST, memory_limit=HOST.memory + 1)


def test_options_refuse_unknown_keys_and_wrong_types() -> None:
    with pytest.raises(
        OptionsError, match=r"bad options for install: ports\.SSH_PORT: Input should be a valid integer"
    ):
        parse(InstallOptions, "install", {"manifest": {}, "location": "x", "ports": {"SSH_PORT": "2222"}})
    with pytest.raises(OptionsError, match="cpuShares: Input should be a valid integer"):
        parse(ConfigureOptions, "configure", {"cpuShares": True})
    assert parse(ConfigureOptions, "configure", {"memoryLimit": 64 * MIB}).only_limits
    assert not parse(ConfigureOptions, "configure", {"env": {}}).only_limits


def test_the_state_table() -> None:
    assert set(STATE_TABLE) >= {"install", "configure", "start", "stop", "restart", "repair", "uninstall", "backup"}
    for op in ("repair", "uninstall"):
        assert STATE_TABLE[op].start_from == ANY_STATE
    for op in ("configure", "start", "stop", "restart", "update", "backup"):
        assert STATE_TABLE[op].start_from == {InstallState.INSTALLED}
    assert STATE_TABLE["install"].start_from == frozenset()
    pendings = [r.pending for r in STATE_TABLE.values()]
    assert len(pendings) == len(set(pendings)), "each operation has its own pending state"


def test_container_spec(tmp_path: Path) -> None:
    m = _manifest(addons={"sendmail": {}, "localstorage": {}})
    spec = AppSpec(
        app_id="a1",
        location="blog.example",
        manifest=m,
        bindings=check_ports(m, {"SSH_PORT": 2222}),
        limits=Limits(100, 50, 64 * MIB),
        env={"USER_VAR": "1", "BOX_APP_ID": "user may not win"},
        addon_env=env_for(
            {"sendmail": {"host": "mail", "port": 2525, "username": "u", "password": "p", "from": "u", "domain": "d"}}
        ),
        data_dir=tmp_path / "a1" / "data",
    )
    kw = create_kwargs(spec, network="none", task_id="t1")
    assert kw["ports"] == {"22/tcp": 2222} and kw["network_mode"] == "none"
    assert kw["cpu_quota"] == 50_000 and kw["cpu_period"] == 100_000 and kw["mem_limit"] == 64 * MIB
    assert kw["environment"]["BOX_APP_ID"] == "a1" and kw["environment"]["SSH_PORT"] == "2222"
    assert kw["environment"]["USER_VAR"] == "1" and kw["environment"]["CLOUDRON_MAIL_SMTP_SERVER"] == "mail"
    assert kw["labels"]["boxtasks.app_id"] == "a1" and kw["labels"]["boxtasks.task_id"] == "t1"
    assert kw["volumes"] == {str(tmp_path / "a1" / "data"): {"bind": "/app/data", "mode": "rw"}}
    assert kw["hostname"] == "blog" and kw["restart_policy"] == {"Name": "unless-stopped"}


def test_operations_are_registered_for_the_task_layer() -> None:
    from hosting import operations

    assert {"install", "configure", "start", "stop", "restart", "repair", "uninstall"} <= set(operations.known())


def test_a_box_option_from_json_is_refused() -> None:
    from hosting.box import resolve

    with pytest.raises(OptionsError, match="unknown option 'box'"):
        resolve({"docker": "x"})
