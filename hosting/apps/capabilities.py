"""What this server provides to apps: the one list the front doors, the tasks and the API read.

An addon is provided when an install sets it up (`hosting.apps.addons` for the mail addons,
`hosting.apps.container` for localstorage). A manifest asking for any other addon is refused
before a task exists, with one message naming each missing addon, and again by the task; one the
manifest marks `"optional": true` is left out instead.
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
    """The manifest's addons this server cannot set up, sorted.

    An addon marked `"optional": true` is one the app runs without (the format's option), so it
    is not among them: the app is installed without it.
    """
    return sorted(a for a, options in manifest.addons.items() if a not in PROVIDED_ADDONS and not _optional(options))


def skipped(manifest: Manifest) -> list[str]:
    """Optional addons this server does not provide: the app goes without them."""
    return sorted(a for a, options in manifest.addons.items() if a not in PROVIDED_ADDONS and _optional(options))


def _optional(options: object) -> bool:
    return isinstance(options, dict) and options.get("optional") is True


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
