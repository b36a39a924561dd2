"""The manifest as packagers write it (CloudronManifest.json): fields kept, ports, image, addons."""

from __future__ import annotations

from typing import Any

import pytest

from config import load_settings
from hosting.apps import capabilities
from hosting.apps.capabilities import addon_refusal, check_addons
from hosting.apps.manifest import DOCUMENTED_FIELDS, parse_manifest, with_image
from hosting.apps.ports import check_ports, new_app_ports
from hosting.errors import AddonNotProvidedError, InputError, ManifestError, PortError

#: Every documented top-level field, with a value of the shape the reference gives it.
FULL: dict[str, Any] = {
    "id": "io.example.full",
    "title": "Full",
    "author": "Jane Packager <jane@example.com>",
    "description": "file://DESCRIPTION.md",
    "tagline": "every field",
    "version": "1.2.3",
    "upstreamVersion": "9.9",
    "healthCheckPath": "/healthz",
    "httpPort": 8000,
    "httpPorts": {"API_FQDN": {"title": "API", "description": "d", "containerPort": 8001, "defaultValue": "api"}},
    "tcpPorts": {
        "SSH_PORT": {
            "title": "SSH",
            "description": "git over ssh",
            "defaultValue": 29418,
            "containerPort": 22,
            "portCount": 1,
            "readOnly": False,
            "enabledByDefault": True,
        }
    },
    "udpPorts": {"TURN_PORT": {"title": "TURN", "defaultValue": 50000, "portCount": 10, "enabledByDefault": False}},
    "addons": {"localstorage": {"ftp": {"uid": 33, "uname": "www-data"}}, "sendmail": {"supportsDisplayName": True}},
    "manifestVersion": 2,
    "website": "https://example.com",
    "contactEmail": "support@example.com",
    "icon": "file://logo.png",
    "iconUrl": "https://example.com/logo.png",
    "tags": ["test"],
    "mediaLinks": ["https://example.com/shot.png"],
    "changelog": "file://CHANGELOG",
    "postInstallMessage": "file://POSTINSTALL.md",
    "checklist": {"change-password": {"message": "change it", "sso": False}},
    "minBoxVersion": "7.0.0",
    "maxBoxVersion": "99.0.0",
    "targetBoxVersion": "8.0.0",
    "memoryLimit": 536870912,
    "multiDomain": True,
    "aliasableDomain": False,
    "optionalSso": True,
    "configurePath": "/admin",
    "documentationUrl": "https://example.com/docs",
    "forumUrl": "https://example.com/forum",
    "packagerName": "Jane",
    "packagerUrl": "https://example.com/jane",
    "packageUrl": "https://git.example.com/full",
    "capabilities": ["net_admin"],
    "runtimeDirs": ["/app/code/cache"],
    "logPaths": ["/run/app/log"],
    "persistentDirs": ["/app/pgdata"],
    "backupCommand": "/app/code/backup.sh",
    "restoreCommand": "/app/code/restore.sh",
    "dockerImage": "registry.example.com/full:1.2.3",
}

#: A server with no database addon server configured.
BARE = load_settings(mysql_addon_url="", postgresql_addon_url="")


def test_every_documented_field_is_accepted_and_shown_back() -> None:
    assert set(FULL) == DOCUMENTED_FIELDS
    m = parse_manifest(FULL)
    assert m.model_dump(by_alias=True, exclude_unset=True) == FULL
    assert m.unknown_fields() == []
    assert m.image == "registry.example.com/full:1.2.3" and m.health_check_path == "/healthz"
    assert m.http_ports["API_FQDN"]["defaultValue"] == "api"  # kept as given: a subdomain, not a port


def test_unknown_keys_are_kept_and_named() -> None:
    m = parse_manifest({**FULL, "developmentMode": False, "x-notes": {"a": 1}})
    assert m.unknown_fields() == ["developmentMode", "x-notes"]
    assert m.model_dump(by_alias=True)["x-notes"] == {"a": 1}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"manifestVersion": 1},
            "manifestVersion: 1 is the retired manifest format, which this server does not read: "
            "port the manifest to manifestVersion 2",
        ),
        ({"manifestVersion": 3}, "manifestVersion: this server reads manifestVersion 2, not 3"),
        ({"healthCheckPath": "health"}, "healthCheckPath: must be a URL path"),
        ({"tcpPorts": {"P": {"title": "p", "readOnly": True}}}, "readOnly fixes the host port at defaultValue"),
        ({"udpPorts": {"P": {"title": "p", "defaultValue": 65530, "portCount": 10}}}, "defaultValue 65530"),
        ({"tcpPorts": {"P": {"title": "p", "defaultvalue": 4000}}}, "tcpPorts.P.defaultvalue: Extra inputs"),
        ({"tcpPorts": {"P": {"description": "no title"}}}, "tcpPorts.P.title: missing: each port needs a title"),
    ],
)
def test_format_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest({**FULL, **change})
    assert message in str(caught.value)


def test_a_manifest_without_id_is_refused_clearly() -> None:
    doc = {k: v for k, v in FULL.items() if k != "id"}
    with pytest.raises(ManifestError) as caught:
        parse_manifest(doc)
    assert str(caught.value) == (
        "invalid manifest: id: missing: a manifest names its app with a reverse-domain id, like 'io.example.app'"
    )


def test_manifest_version_absent_is_read_as_2() -> None:
    doc = {k: v for k, v in FULL.items() if k != "manifestVersion"}
    assert parse_manifest(doc).manifest_version == 2


def test_the_image_comes_from_the_installer_or_the_manifest() -> None:
    bare = {k: v for k, v in FULL.items() if k != "dockerImage"}
    assert parse_manifest(bare).docker_image is None  # a packager's file has none: still a manifest
    with pytest.raises(ManifestError) as caught:
        with_image(bare, None)
    assert str(caught.value) == (
        'no image to run: the manifest has no dockerImage; give one: --image (CLI) or "image" in the request body (API)'
    )
    with pytest.raises(ManifestError, match="names no dockerImage"):
        _ = parse_manifest(bare).image
    assert with_image(bare, "busybox:1.36")["dockerImage"] == "busybox:1.36"
    assert with_image(FULL, None)["dockerImage"] == FULL["dockerImage"]
    assert with_image(FULL, "busybox:1.36")["dockerImage"] == "busybox:1.36"  # the installer's wins
    assert "dockerImage" not in bare  # the caller's document is not changed
    with pytest.raises(ManifestError, match="dockerImage: must be a Docker image reference"):
        parse_manifest(with_image(bare, "Not An Image"))


def test_default_ports_are_bound_unless_disabled_or_unbound() -> None:
    m = parse_manifest(FULL)
    # Nothing given: SSH_PORT at its defaultValue; TURN_PORT is not enabled by default.
    assert new_app_ports(m, {}) == {"SSH_PORT": 29418, "TURN_PORT": None}
    bindings = check_ports(m, new_app_ports(m, {}))
    assert [(b.env_var, b.host_port, b.docker_ports()) for b in bindings] == [("SSH_PORT", 29418, {"22/tcp": 29418})]
    # Asked for: TURN_PORT's range is bound; None leaves SSH_PORT unbound.
    wanted = new_app_ports(m, {"SSH_PORT": None, "TURN_PORT": 50000})
    assert wanted == {"SSH_PORT": None, "TURN_PORT": 50000}
    (turn,) = check_ports(m, wanted)
    assert turn.type == "udp" and list(turn.host_ports) == list(range(50000, 50010))
    assert turn.docker_ports() == {f"{p}/udp": p for p in range(50000, 50010)}  # no containerPort: the host's
    # Applying it again (the task, a retry) changes nothing.
    assert new_app_ports(m, wanted) == wanted
    # An undeclared name given is kept, for check_ports to name.
    with pytest.raises(PortError, match="NOPE: the manifest declares no such port"):
        check_ports(m, new_app_ports(m, {"NOPE": 4000}))


def test_read_only_ports_keep_their_default() -> None:
    m = parse_manifest({**FULL, "tcpPorts": {"SMTP_PORT": {"title": "smtp", "defaultValue": 2526, "readOnly": True}}})
    assert [b.host_port for b in check_ports(m, new_app_ports(m, {}))] == [2526]
    assert [b.host_port for b in check_ports(m, {"SMTP_PORT": 2526})] == [2526]
    with pytest.raises(PortError) as caught:
        check_ports(m, {"SMTP_PORT": 4000})
    assert "SMTP_PORT: the manifest fixes this port at 2526 (readOnly); give 2526 or leave it out" in str(caught.value)


def test_a_default_on_a_reserved_port_is_refused_with_the_fix() -> None:
    m = parse_manifest({**FULL, "udpPorts": {"DNS_PORT": {"title": "dns", "defaultValue": 53}}})
    with pytest.raises(PortError, match="DNS_PORT: port 53 is reserved for DNS; choose another"):
        check_ports(m, new_app_ports(m, {}))
    assert check_ports(m, new_app_ports(m, {"DNS_PORT": 5353}))[0].host_port == 5353


def test_unprovided_addons_are_refused_in_one_message_naming_each() -> None:
    m = parse_manifest({**FULL, "addons": {"localstorage": {}, "oidc": {"loginRedirectUri": "/cb"}, "ldap": {}}})
    with pytest.raises(AddonNotProvidedError) as caught:
        check_addons(m, BARE)
    assert isinstance(caught.value, InputError)
    assert str(caught.value) == addon_refusal("io.example.full", ["ldap", "oidc"], BARE)
    assert str(caught.value) == (
        "io.example.full needs addon(s) this server does not provide: ldap, oidc (provided: "
        f"{', '.join(sorted(capabilities.provided(BARE)))}; see GET /api/v1/platform/capabilities)"
    )
    check_addons(parse_manifest(FULL), BARE)  # localstorage and sendmail: provided
    cron = {"scheduler": {"housekeeping": {"schedule": "*/5 * * * *", "command": "/app/code/cron.sh"}}}
    with pytest.raises(AddonNotProvidedError) as caught:
        check_addons(parse_manifest({**FULL, "addons": {**cron, "proxyAuth": {}, "email": {}, "tls": {}}}), BARE)
    assert str(caught.value) == addon_refusal("io.example.full", ["email", "proxyAuth", "tls"], BARE)
    check_addons(parse_manifest({**FULL, "addons": cron}), BARE)  # the scheduler is provided everywhere
    bad = {"scheduler": {"housekeeping": {"schedule": "every minute", "command": "/app/code/cron.sh"}}}
    with pytest.raises(ManifestError, match="housekeeping"):
        check_addons(parse_manifest({**FULL, "addons": bad}), BARE)


def test_an_optional_addon_not_provided_is_left_out_not_refused() -> None:
    addons = {"localstorage": {}, "redis": {"optional": True}, "ldap": {"optional": False}, "mysql": {}}
    m = parse_manifest({**FULL, "addons": addons})
    assert capabilities.unprovided(m, BARE) == sorted({"ldap", "mysql"} - capabilities.provided(BARE))
    assert capabilities.skipped(m, BARE) == sorted({"redis"} - capabilities.provided(BARE))
    check_addons(parse_manifest({**FULL, "addons": {"localstorage": {}, "redis": {"optional": True}}}), BARE)


def test_provided_addons_are_the_ones_an_install_sets_up() -> None:
    from hosting.apps.addons import MAIL_ADDONS

    assert {"localstorage", *MAIL_ADDONS} <= capabilities.provided(BARE)
    assert capabilities.provided_addons(BARE) == sorted(capabilities.provided(BARE))
    assert capabilities.MANIFEST_VERSIONS == (2,)


def test_a_database_addon_is_provided_once_its_server_is_configured() -> None:
    m = parse_manifest({**FULL, "addons": {"localstorage": {}, "mysql": {}}})
    with pytest.raises(AddonNotProvidedError) as caught:
        check_addons(m, BARE)
    assert "mysql is provided once BOXTASKS_MYSQL_ADDON_URL is set" in str(caught.value)
    with_mysql = load_settings(mysql_addon_url="mysql+pymysql://root@127.0.0.1:3306", postgresql_addon_url="")
    check_addons(m, with_mysql)
    assert "mysql" in capabilities.provided_addons(with_mysql)
    assert "postgresql" not in capabilities.provided_addons(with_mysql)


def test_a_manifest_stored_before_dockerimage_still_reads() -> None:
    """Apps, backups and archives stored by an earlier boxtasks name the image `image`."""
    old = {k: v for k, v in FULL.items() if k != "dockerImage"} | {"image": "registry.example.com/full:1.0.0"}
    assert parse_manifest(old).image == "registry.example.com/full:1.0.0"
    both = {**FULL, "image": "ignored:1"}
    assert parse_manifest(both).image == FULL["dockerImage"]


def test_an_optional_database_addon_not_provided_is_left_out_by_the_install_too() -> None:
    """The task's own check (`databases.check_provided`, in install, update, restore) agrees with the front door's."""
    from hosting.apps import databases

    m = parse_manifest({**FULL, "addons": {"localstorage": {}, "redis": {"optional": True}, "mysql": {}}})
    with_mysql = load_settings(mysql_addon_url="mysql+pymysql://root@127.0.0.1:3306", postgresql_addon_url="")
    check_addons(m, with_mysql)
    assert databases.check_provided(m, with_mysql) == ["mysql"]
    with pytest.raises(AddonNotProvidedError, match="mysql"):
        databases.check_provided(m, BARE)
