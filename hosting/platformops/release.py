"""Platform releases: fetch a tarball, check it, read its manifest. Nothing is changed here.

A release is `<name>.tar.gz` holding `manifest.json` ({"version": "1.2.3", "infra": [{name, image,
version}], ...}), published with `<url>.sha256` (sha256sum's format, or the bare hex digest) and,
where the platform is set up with a public key (`BOXTASKS_RELEASE_PUBLIC_KEY`, base64 raw Ed25519),
`<url>.sig` (base64 Ed25519 signature over the tarball's bytes). Every check happens before the
update touches anything: a release that fails one is refused with a ReleaseVerifyError.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import shutil
import tarfile
import urllib.parse
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import Settings
from config.filemodes import private_dir
from hosting.apps.manifest import SEMVER
from hosting.backups import fileformat
from hosting.errors import CorruptBackupError, InputError, ReleaseError, ReleaseVerifyError
from hosting.platformops import infra

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SMALL = 64 * 1024
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Release:
    url: str
    path: Path
    sha256: str
    version: str
    infra: list[infra.Service]
    manifest: dict[str, Any]
    signed: bool


def load(url: str, work_dir: Path, settings: Settings) -> Release:
    """Fetch the release at `url` with its checksum (and signature), verify both, parse its manifest."""
    if not url:
        raise ReleaseError("no release URL: pass release_url, or set BOXTASKS_RELEASE_URL")
    private_dir(work_dir)
    name = Path(urllib.parse.urlsplit(url).path).name or "release.tar.gz"
    path = work_dir / name
    fetch(url, path, max_bytes=settings.release_max_bytes)
    expected = parse_checksum(fetch_small(url + ".sha256"), url)
    actual = sha256_of(path)
    if actual != expected:
        raise ReleaseVerifyError(
            f"release {url} does not match its published checksum (sha256 {actual}, published {expected}): "
            "refused; nothing was changed. Download it again or check the release server"
        )
    signed = False
    if settings.release_public_key:
        verify_signature(path, fetch_small(url + ".sig"), settings.release_public_key, url)
        signed = True
    manifest = read_manifest(path, url)
    return Release(url, path, actual, manifest["version"], infra.parse(manifest.get("infra", [])), manifest, signed)


# ---------------------------------------------------------------------------- fetching


def fetch(url: str, dest: Path, *, max_bytes: int) -> Path:
    """Copy `url` (file://, http://, https://) to `dest`, refusing more than `max_bytes`."""
    scheme = urllib.parse.urlsplit(url).scheme
    try:
        if scheme == "file":
            source = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
            if source.stat().st_size > max_bytes:
                raise ReleaseError(f"release {url} is larger than {max_bytes} bytes (BOXTASKS_RELEASE_MAX_BYTES)")
            shutil.copyfile(source, dest)
        elif scheme in ("http", "https"):
            _download(url, dest, max_bytes=max_bytes)
        else:
            raise ReleaseError(f"release URL {url!r}: use file://, http:// or https://")
    except OSError as err:
        raise ReleaseError(f"cannot fetch release {url}: {err}") from err
    return dest


def fetch_small(url: str) -> bytes:
    """A checksum or signature file next to the release."""
    scheme = urllib.parse.urlsplit(url).scheme
    try:
        if scheme == "file":
            with open(urllib.parse.unquote(urllib.parse.urlsplit(url).path), "rb") as f:
                return f.read(_SMALL)
        import requests

        resp = requests.get(url, timeout=30)
        if resp.status_code != 200:
            raise ReleaseError(f"cannot fetch {url}: HTTP {resp.status_code}; is the release published with it?")
        return resp.content[:_SMALL]
    except OSError as err:
        raise ReleaseError(f"cannot fetch {url}: {err}; is the release published with it?") from err
    except Exception as err:
        if isinstance(err, ReleaseError):
            raise
        raise ReleaseError(f"cannot fetch {url}: {err}") from err


def _download(url: str, dest: Path, *, max_bytes: int) -> None:
    import requests

    try:
        with requests.get(url, stream=True, timeout=60) as resp:
            if resp.status_code != 200:
                raise ReleaseError(f"cannot fetch release {url}: HTTP {resp.status_code}")
            got = 0
            with open(dest, "wb") as out:
                for chunk in resp.iter_content(_CHUNK):
                    got += len(chunk)
                    if got > max_bytes:
                        raise ReleaseError(f"release {url} is larger than {max_bytes} bytes: refused")
                    out.write(chunk)
    except requests.RequestException as err:
        raise ReleaseError(f"cannot fetch release {url}: {err}") from err


# ---------------------------------------------------------------------------- checking


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def parse_checksum(text: bytes, url: str) -> str:
    """`<hex>  <name>` (sha256sum) or `<hex>`."""
    first = text.decode(errors="replace").strip().split()
    value = first[0].lower() if first else ""
    if not _HEX64.fullmatch(value):
        raise ReleaseVerifyError(f"the checksum file of release {url} holds no sha256 digest: refused")
    return value


def verify_signature(path: Path, signature: bytes, public_key: str, url: str) -> None:
    """Ed25519 over the tarball's bytes, with the configured public key."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
    except (binascii.Error, ValueError) as err:
        raise InputError(f"BOXTASKS_RELEASE_PUBLIC_KEY is not a base64 raw Ed25519 public key: {err}") from err
    try:
        raw_sig = base64.b64decode(signature.strip(), validate=True)
        key.verify(raw_sig, path.read_bytes())
    except (binascii.Error, ValueError, InvalidSignature) as err:
        raise ReleaseVerifyError(
            f"release {url} is not signed by the configured release key: refused; nothing was changed"
        ) from err


def read_manifest(path: Path, url: str) -> dict[str, Any]:
    """The manifest, after reading every member through (a truncated or damaged tarball is refused, and so
    is one with a member that would land outside wherever it is unpacked: `fileformat.check_members`)."""
    raw: bytes | None = None
    members: list[tarfile.TarInfo] = []
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            for member in tar:
                members.append(member)
                fileobj = tar.extractfile(member) if member.isfile() else None
                if fileobj is None:
                    continue
                if member.name.removeprefix("./") == MANIFEST:
                    raw = fileobj.read()
                while fileobj.read(_CHUNK):
                    pass
        fileformat.check_members(members, f"release {url}")
        if raw is None:
            raise ReleaseVerifyError(f"release {url} has no {MANIFEST}: it is not a platform release; refused")
        doc = json.loads(raw)
    except CorruptBackupError as err:
        raise ReleaseVerifyError(f"{err}; nothing was changed") from err
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as err:
        raise ReleaseVerifyError(f"release {url} is corrupt ({err}): refused; nothing was changed") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("version"), str) or not SEMVER.fullmatch(doc["version"]):
        raise ReleaseVerifyError(f"release {url}: {MANIFEST} has no valid 'version' (like 1.2.3): refused")
    try:
        infra.parse(doc.get("infra", []))
    except InputError as err:
        raise ReleaseVerifyError(f"release {url}: {err}: refused") from err
    return doc


def version_key(version: str) -> tuple[int, int, int, int, str]:
    """Order of semantic versions (a pre-release sorts before its release)."""
    core, _, pre = version.split("+", 1)[0].partition("-")
    major, minor, patch = (int(p) for p in core.split("."))
    return major, minor, patch, 0 if pre else 1, pre
