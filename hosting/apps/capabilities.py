"""What this server provides to apps: the one list the front doors, the tasks and the API read.

An addon is provided when an install sets it up (`hosting.apps.addons` for the mail addons,
`hosting.apps.container` for localstorage). A manifest asking for any other addon is refused
before a task exists, with one message naming each missing addon, and again by the task.
"""

from __future__ import annotations

from hosting.apps.manifest import MANIFEST_VERSION, Manifest
from hosting.errors import AddonError

#: Addons an app gets here today. Adding one: provision it, then name it here.
PROVIDED_ADDONS: frozenset[str] = frozenset({"localstorage", "recvmail", "sendmail"})
#: manifestVersion values accepted.
MANIFEST_VERSIONS: tuple[int, ...] = (MANIFEST_VERSION,)


def provided_addons() -> list[str]:
    return sorted(PROVIDED_ADDONS)


def unprovided(manifest: Manifest) -> list[str]:
    """The manifest's addons this server cannot set up, sorted."""
    return sorted(set(manifest.addons) - PROVIDED_ADDONS)


def check_addons(manifest: Manifest) -> None:
    """Refuse (AddonError) a manifest asking for any addon this server does not provide, naming each."""
    missing = unprovided(manifest)
    if missing:
        raise AddonError(addon_refusal(manifest.id, missing))


def addon_refusal(app: str, missing: list[str]) -> str:
    """The refusal's one message (a function, so tests and docs quote it exactly)."""
    return (
        f"{app} needs addon(s) this server does not provide: {', '.join(missing)} "
        f"(provided: {', '.join(provided_addons())}; see GET /api/v1/platform/capabilities)"
    )
