"""What this server provides to apps: the one list the front doors, the tasks and the API read.

An addon is provided when an install sets it up: the mail addons (`hosting.apps.addons`),
localstorage (`hosting.apps.container`) and the scheduler (`hosting.apps.scheduler`: beat sends the
jobs) everywhere, and each database addon where its server is configured (`hosting.apps.databases`).
A manifest asking for any other addon is refused before a task exists, with one message naming each
missing addon, and again by the task; one the manifest marks `"optional": true` is left out instead.
"""

from __future__ import annotations

from config import Settings
from hosting.apps import databases, scheduler
from hosting.apps.manifest import MANIFEST_VERSION, Manifest
from hosting.errors import AddonNotProvidedError

#: Addons every server provides. A database addon is added by its server's setting (`provided`).
CORE_ADDONS: frozenset[str] = frozenset({"localstorage", "recvmail", "scheduler", "sendmail"})
#: manifestVersion values accepted.
MANIFEST_VERSIONS: tuple[int, ...] = (MANIFEST_VERSION,)


def provided(settings: Settings) -> frozenset[str]:
    """The addons an app gets on this server."""
    return CORE_ADDONS | databases.provided(settings)


def provided_addons(settings: Settings) -> list[str]:
    return sorted(provided(settings))


def unprovided(manifest: Manifest, settings: Settings) -> list[str]:
    """The manifest's addons this server cannot set up, sorted.

    An addon marked `"optional": true` is one the app runs without (the format's option), so it
    is not among them: the app is installed without it.
    """
    have = provided(settings)
    return sorted(a for a, options in manifest.addons.items() if a not in have and not _optional(options))


def skipped(manifest: Manifest, settings: Settings) -> list[str]:
    """Optional addons this server does not provide: the app goes without them."""
    have = provided(settings)
    return sorted(a for a, options in manifest.addons.items() if a not in have and _optional(options))


def _optional(options: object) -> bool:
    return isinstance(options, dict) and options.get("optional") is True


def check_addons(manifest: Manifest, settings: Settings) -> None:
    """Refuse (AddonNotProvidedError) a manifest asking for any addon this server does not provide, naming
    each; and one whose scheduler jobs are not valid (SchedulerError, naming the job)."""
    missing = unprovided(manifest, settings)
    if missing:
        raise AddonNotProvidedError(addon_refusal(manifest.id, missing, settings))
    if scheduler.SCHEDULER in manifest.addons:
        scheduler.parse_jobs(manifest.addons[scheduler.SCHEDULER])


def addon_refusal(app: str, missing: list[str], settings: Settings) -> str:
    """The refusal's one message (a function, so tests and docs quote it exactly)."""
    configurable = [a for a in missing if a in databases.SETTING and a != databases.REDIS]
    hint = "".join(f"; {a} is provided once {databases.SETTING[a]} is set" for a in configurable)
    return (
        f"{app} needs addon(s) this server does not provide: {', '.join(missing)} "
        f"(provided: {', '.join(provided_addons(settings))}{hint}; see GET /api/v1/platform/capabilities)"
    )
