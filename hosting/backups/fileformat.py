"""Backup archives on disk: tar + gzip, sha256 over the bytes as written, written crash-safe.

An archive is written under a temporary name, fsynced, read back in full (checksum, gzip CRC, tar
structure) and only then renamed into place, so a crash at any point leaves either no archive or a
complete one, never a half file under the final name. Reading verifies the same way before anything
is extracted, so a corrupt archive is refused before it touches the target.

An archive restores only inside its target (`check_members`, run by `verify` and again by `extract`
over every member before the first is written): a name that is absolute or climbs out with `..`,
a link that leads out of its top-level directory (or a member reached through a link), a device or
other special file, a set-uid/set-gid/sticky mode, or a name given twice makes the archive corrupt.
The writer never stores such a member (special bits cleared, specials and escaping links left out
with a warning), so a backup it made can always be restored.
Archives are 0600 and the directories made for them 0700: a box backup holds the whole database.

gzip (stdlib) rather than zstd: no extra native dependency, and every rescue system can open it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import posixpath
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from config.filemodes import create_private_file, private_dir
from hosting.errors import CorruptBackupError, StorageError

logger = logging.getLogger(__name__)

FORMAT = "tgz"
SUFFIX = ".tar.gz"
#: Level 6 (gzip's default): most of level 9's ratio at a fraction of its time.
COMPRESS_LEVEL = 6
_CHUNK = 1 << 20
#: Temporary names start here; a crashed writer's leftovers are recognisable (and cleaned up).
TEMP_PREFIX = ".partial-"


@dataclass(frozen=True, slots=True)
class Written:
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Contents:
    """What goes into an archive: directories (arcname -> host dir), files and JSON documents."""

    dirs: Mapping[str, Path]
    files: Mapping[str, Path]
    documents: Mapping[str, Any]


class _HashingWriter(io.RawIOBase):
    """Counts and hashes every byte on its way to the file (one pass, no re-read needed for the sum)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.hash.update(view)
        self._raw.write(view)
        self.size += len(view)
        return len(view)


class _HashingReader(io.RawIOBase):
    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self.hash.update(memoryview(buffer)[:n])
            self.size += n
        return int(n or 0)


def write(dest: Path, contents: Contents) -> Written:
    """Write `contents` as a .tar.gz at `dest` (temp name, fsync, verify, rename); return its size and sum."""
    private_dir(dest.parent)
    tmp = dest.with_name(f"{TEMP_PREFIX}{dest.name}")
    _unlink_quietly(tmp)  # a crashed writer's leftover may have another mode: start afresh
    try:
        with os.fdopen(create_private_file(tmp), "wb") as raw:
            hashing = _HashingWriter(raw)
            with (
                gzip.GzipFile(fileobj=hashing, mode="wb", compresslevel=COMPRESS_LEVEL, mtime=0) as gz,
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                for arcname, document in contents.documents.items():
                    _add_bytes(tar, arcname, json.dumps(document, sort_keys=True, indent=1).encode())
                for arcname, path in contents.files.items():
                    tar.add(str(path), arcname=arcname, recursive=False, filter=_storable)
                for arcname, directory in contents.dirs.items():
                    if directory.is_dir():
                        tar.add(str(directory), arcname=arcname, recursive=True, filter=_storable)
                    else:
                        _add_dir(tar, arcname)
            raw.flush()
            os.fsync(raw.fileno())
        written = Written(dest, hashing.size, hashing.hash.hexdigest())
        verify(tmp, sha256=written.sha256, size=written.size)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as err:
        _unlink_quietly(tmp)
        raise StorageError(
            f"cannot write backup archive {dest}: {err}; check the backup directory and free space"
        ) from err
    except BaseException:
        _unlink_quietly(tmp)
        raise
    logger.info("archive %s written: %d bytes, sha256 %s", dest, written.size, written.sha256)
    return written


def verify(path: Path, *, sha256: str | None, size: int | None = None) -> list[tarfile.TarInfo]:
    """Read the whole archive: the checksum and size match, gzip's CRC holds, every tar member reads and
    stays inside its target (`check_members`). Returns the members, for a caller's checks of its layout."""
    if not path.is_file():
        raise CorruptBackupError(f"backup archive {path} is missing; this backup cannot be used")
    members: list[tarfile.TarInfo] = []
    try:
        with open(path, "rb") as raw:
            reader = _HashingReader(raw)
            with tarfile.open(fileobj=io.BufferedReader(reader, _CHUNK), mode="r|gz") as tar:
                for member in tar:
                    members.append(member)
                    if member.isfile():
                        fileobj = tar.extractfile(member)
                        assert fileobj is not None
                        while fileobj.read(_CHUNK):
                            pass
            while reader.read(_CHUNK):  # trailing bytes count too
                pass
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise CorruptBackupError(f"backup archive {path} is corrupt ({err}); it is refused") from err
    except OSError as err:
        raise CorruptBackupError(f"backup archive {path} cannot be read ({err}); it is refused") from err
    if size is not None and reader.size != size:
        raise CorruptBackupError(f"backup archive {path} has {reader.size} bytes, not {size}: it is refused")
    if sha256 is not None and reader.hash.hexdigest() != sha256:
        raise CorruptBackupError(
            f"backup archive {path} fails its checksum (sha256 {reader.hash.hexdigest()}, recorded {sha256}); "
            "it is refused and nothing was restored"
        )
    check_members(members, f"backup archive {path}")
    return members


def read_document(path: Path, arcname: str) -> Any:
    """One JSON document from an archive (already verified by the caller)."""
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            fileobj = tar.extractfile(arcname)
            if fileobj is None:
                raise CorruptBackupError(f"backup archive {path} has no {arcname}")
            return json.loads(fileobj.read())
    except KeyError as err:
        raise CorruptBackupError(f"backup archive {path} has no {arcname}") from err
    except (tarfile.TarError, OSError, ValueError) as err:
        raise CorruptBackupError(f"cannot read {arcname} from backup archive {path}: {err}") from err


def extract(path: Path, dest: Path) -> None:
    """Extract everything into `dest` (which must not exist), keeping modes (but special bits), owners,
    times and links. Every member is checked before the first is written: a refused archive writes nothing."""
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            members = tar.getmembers()
            check_members(members, f"backup archive {path}")
            private_dir(dest.parent)
            dest.mkdir(mode=0o700)
            tar.extractall(str(dest), members=members, filter=_restorable, numeric_owner=True)
    except CorruptBackupError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except tarfile.FilterError as err:
        shutil.rmtree(dest, ignore_errors=True)
        raise CorruptBackupError(
            f"backup archive {path} is corrupt: {err}; it is refused and nothing was restored"
        ) from err
    except (tarfile.TarError, EOFError, zlib.error) as err:
        shutil.rmtree(dest, ignore_errors=True)
        raise CorruptBackupError(f"backup archive {path} is corrupt ({err}); nothing was restored") from err
    except OSError as err:
        shutil.rmtree(dest, ignore_errors=True)
        raise StorageError(f"cannot extract backup archive {path} into {dest}: {err}") from err


def check_members(members: Iterable[tarfile.TarInfo], what: str) -> None:
    """Refuse the archive (CorruptBackupError naming the member) unless every member stays inside its target.

    `what` names the archive in the message ("backup archive /path").

    Order does not matter: a link named after the file that goes through it is caught all the same.
    """
    listed = list(members)
    kinds: dict[str, tarfile.TarInfo] = {}
    for member in listed:
        reason = _refusal(member) or ("appears twice in the archive" if _name(member) in kinds else None)
        if reason is None and member.islnk():
            target = kinds.get(posixpath.normpath(member.linkname))
            if target is None or not target.isreg():
                reason = f"is a hard link to {member.linkname!r}, which is no regular file earlier in the archive"
        if reason is not None:
            _refuse(what, member, reason)
        kinds[_name(member)] = member
    for member in listed:
        parts = _name(member).split("/")
        for depth in range(1, len(parts)):
            above = kinds.get("/".join(parts[:depth]))
            if above is not None and not above.isdir():
                kind = "link" if above.issym() or above.islnk() else "file"
                _refuse(what, member, f"lies under {above.name!r}, which is a {kind}, not a directory")
        if member.issym():
            via = _link_through_link(member, kinds)
            if via is not None:
                _refuse(what, member, f"points through the link {via!r} (links are checked one at a time)")


def _link_through_link(member: tarfile.TarInfo, kinds: dict[str, tarfile.TarInfo]) -> str | None:
    """The symlink member that `member`'s target passes through as a directory, if any.

    Each link's target is checked as text; one that goes through another link (`a -> b/../..`, with
    `b` a link) lands wherever that link leads, which its text does not show. A link to a link
    (`lib.so -> lib.so.1`) is fine: the last one is checked on its own.
    """
    path = [p for p in posixpath.dirname(_name(member)).split("/") if p]
    steps = [p for p in member.linkname.split("/") if p not in ("", ".")]
    for i, part in enumerate(steps):
        if part == "..":
            if path:
                path.pop()
            continue
        path.append(part)
        hit = kinds.get("/".join(path))
        if i < len(steps) - 1 and hit is not None and hit.issym():
            return hit.name
    return None


def remove(path: Path) -> bool:
    """Delete an archive (and a leftover temp file of it); False when neither was there."""
    gone = False
    for candidate in (path, path.with_name(f"{TEMP_PREFIX}{path.name}")):
        try:
            candidate.unlink()
            gone = True
        except FileNotFoundError:
            continue
        except OSError as err:
            raise StorageError(f"cannot delete backup archive {candidate}: {err}") from err
    return gone


def temp_path(path: Path) -> Path:
    return path.with_name(f"{TEMP_PREFIX}{path.name}")


@contextmanager
def staging(beside: Path, name: str) -> Iterator[Path]:
    """A fresh directory next to `beside` (same filesystem, so a rename moves it); removed afterwards."""
    stage = beside.parent / f".{name}-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# ---------------------------------------------------------------------------- helpers


_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


def _name(member: tarfile.TarInfo) -> str:
    return posixpath.normpath(member.name)


def _refusal(member: tarfile.TarInfo) -> str | None:
    """Why `member` on its own cannot be restored safely, or None."""
    name = member.name
    if not name or name.startswith("/") or "\x00" in name:
        return "has an absolute or empty name"
    normal = posixpath.normpath(name)
    if normal in (".", "..") or ".." in name.split("/"):
        return "climbs out of the target with '..'"
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        return "is a device, FIFO or other special file"
    if member.mode & _SPECIAL_BITS:
        return f"has a set-uid, set-gid or sticky mode ({member.mode:o})"
    if member.issym():
        # A link stays inside the top-level directory it lies in: only that is restored as a whole.
        target = member.linkname
        top = normal.split("/", 1)[0]
        if normal == top:
            return f"is a link ({target!r}) at the top of the archive"
        if not target or target.startswith("/"):
            return f"is a link to the absolute path {target!r}"
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(normal), target))
        if resolved != top and not resolved.startswith(top + "/"):
            return f"is a link to {target!r}, outside {top!r}"
    if member.islnk() and (member.linkname.startswith("/") or ".." in member.linkname.split("/")):
        return f"is a hard link to {member.linkname!r}, outside the archive"
    return None


def _refuse(what: str, member: tarfile.TarInfo, reason: str) -> None:
    raise CorruptBackupError(f"{what} is corrupt: member {member.name!r} {reason}; it is refused")


def _restorable(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """What is extracted: the `data` filter's member (its checks against the disk as it is now, its name
    and link), with the archive's owners and permission bits put back, since an app's data needs them and
    the filter drops owners and rewrites modes. Special bits never come back (`check_members` refused them)."""
    safe = tarfile.data_filter(member, dest)
    mode = stat.S_IMODE(member.mode) & ~_SPECIAL_BITS  # (a link's is never applied)
    return safe.replace(mode=mode, uid=member.uid, gid=member.gid, uname=member.uname, gname=member.gname, deep=False)


def _storable(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """What goes into an archive: nothing `check_members` would refuse, so every backup made restores.

    Set-uid/set-gid/sticky bits are cleared; devices, FIFOs and links that lead out of the app's
    data cannot be restored safely, so they are left out, each with a warning.
    """
    member = member.replace(mode=member.mode & ~_SPECIAL_BITS, deep=False)
    reason = _refusal(member)
    if reason is not None:
        logger.warning("backup: %r left out of the archive: it %s", member.name, reason)
        return None
    return member


def _add_bytes(tar: tarfile.TarFile, arcname: str, data: bytes) -> None:
    info = tarfile.TarInfo(arcname)
    info.size, info.mode = len(data), 0o600
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, arcname: str) -> None:
    info = tarfile.TarInfo(arcname)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    tar.addfile(info)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
