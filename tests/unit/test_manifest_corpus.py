"""Real manifests, as packagers published them (tests/data/manifests, sources in SOURCES.md).

Each is accepted, or refused only because it asks for addons this server does not provide, and the
refusal names exactly those. `ADDONS_BEYOND_CORE` is read off the files by hand (every addon each
asks for besides localstorage, sendmail and recvmail), so the test does not derive its expectation
from the code under test; which of them are refused follows `capabilities.provided(BARE)`, as it grows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from config import load_settings
from hosting.apps import capabilities
from hosting.apps.capabilities import addon_refusal, check_addons
from hosting.apps.manifest import parse_manifest, with_image
from hosting.apps.ports import check_ports, new_app_ports
from hosting.errors import AddonNotProvidedError, ManifestError

CORPUS = Path(__file__).resolve().parents[1] / "data" / "manifests"

#: Required addons only: one marked `"optional": true` is left out, not refused.
ADDONS_BEYOND_CORE: dict[str, list[str]] = {
    "act-runner": [],
    "atuin": ["postgresql"],
    "calcom": ["postgresql"],
    "endurain": ["oidc", "postgresql", "redis"],
    "foundryvtt": [],
    "growi": ["mongodb", "oidc"],
    "healthchecks": ["postgresql"],
    "keycloak": ["ldap", "postgresql"],
    "laminar": ["oidc", "postgresql"],
    "lamp": ["ldap", "mongodb", "mysql"],  # and redis, marked optional: installed without it
    "mongodb": ["mongodb"],
    "movinin": ["mongodb"],
    "node-red": ["oidc"],
    "odoo-alusage": ["ldap", "postgresql"],
    "papermc": ["ldap"],
    "pelican-panel": ["mysql"],
    "plausible": ["postgresql"],
    "postgresql": ["postgresql"],
    "prosody-derekjarvis": ["ldap", "tls", "turn"],
    "prosody-orcvole": ["ldap", "tls", "turn"],
    "semaphore": ["oidc", "postgresql"],
    "timeoff": ["postgresql"],
    "tshock": [],
    "typesense": [],
    "wger": ["oidc", "postgresql", "redis"],
    "windmill": [],
    "xwiki": ["mysql"],
}
#: Real manifests refused for what they are, and the exact reason.
REFUSED: dict[str, str] = {
    "bind-no-id": (
        "invalid manifest: id: missing: a manifest names its app with a reverse-domain id, like 'io.example.app'"
    ),
    "nextcloud-v1": (
        "invalid manifest: manifestVersion: 1 is the retired manifest format, which this server does not read: "
        "port the manifest to manifestVersion 2"
    ),
    "rocketchat-v1": (
        "invalid manifest: manifestVersion: 1 is the retired manifest format, which this server does not read: "
        "port the manifest to manifestVersion 2"
    ),
}

#: A server with no database addon server configured.
BARE = load_settings(mysql_addon_url="", postgresql_addon_url="")


def _load(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def test_the_corpus_is_what_the_tables_name() -> None:
    assert sorted(p.stem for p in CORPUS.glob("*.json")) == sorted(ADDONS_BEYOND_CORE)
    assert sorted(p.stem for p in (CORPUS / "refused").glob("*.json")) == sorted(REFUSED)
    sources = (CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    for path in [*CORPUS.glob("*.json"), *(CORPUS / "refused").glob("*.json")]:
        assert f"| {path.relative_to(CORPUS)} |" in sources, f"{path.name} has no source in SOURCES.md"
    used = {a for addons in ADDONS_BEYOND_CORE.values() for a in addons}
    assert {"ldap", "oidc", "mysql", "postgresql", "redis"} <= used


@pytest.mark.parametrize("name", sorted(ADDONS_BEYOND_CORE))
def test_a_real_manifest_is_accepted_or_refused_for_its_addons(name: str) -> None:
    doc = _load(CORPUS / f"{name}.json")
    stored = with_image(doc, None if doc.get("dockerImage") else "busybox:latest")
    manifest = parse_manifest(stored)
    # Every field the packager wrote is kept, as written: in what is stored, and in the model.
    assert {k: v for k, v in stored.items() if k != "dockerImage"} == {
        k: v for k, v in doc.items() if k != "dockerImage"
    }
    assert {k: v for k, v in manifest.model_dump(by_alias=True, exclude_unset=True).items() if k in doc} == doc
    missing = [a for a in ADDONS_BEYOND_CORE[name] if a not in capabilities.provided(BARE)]
    if missing:
        with pytest.raises(AddonNotProvidedError) as caught:
            check_addons(manifest, BARE)
        assert str(caught.value) == addon_refusal(manifest.id, missing, BARE)
    else:
        check_addons(manifest, BARE)
    # Its ports, left to their defaults, are ones a front door can bind.
    check_ports(manifest, new_app_ports(manifest, {}))


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_real_manifest_refused_for_what_it_is(name: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(with_image(_load(CORPUS / "refused" / f"{name}.json"), "busybox:latest"))
    assert str(caught.value) == REFUSED[name]
