"""Backup archives on disk: tar + gzip, sha256 over the bytes as written, written crash-safe.

An archive is written under a temporary name, fsynced, read back in full (checksum, gzip CRC, tar
structure) and only then renamed into place, so a crash at any point leaves either no archive or a
complete one, never a half file under the final name. Reading verifies the same way before anything
is extracted, so a corrupt archive is refused before it touches the target.

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
import shutil
import tarfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

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
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{TEMP_PREFIX}{dest.name}")
    try:
        with open(tmp, "wb") as raw:
            hashing = _HashingWriter(raw)
            with (
                gzip.GzipFile(fileobj=hashing, mode="wb", compresslevel=COMPRESS_LEVEL, mtime=0) as gz,
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                for arcname, document in contents.documents.items():
                    _add_bytes(tar, arcname, json.dumps(document, sort_keys=True, indent=1).encode())
                for arcname, path in contents.files.items():
                    tar.add(str(path), arcname=arcname, recursive=False)
                for arcname, directory in contents.dirs.items():
                    if directory.is_dir():
                        tar.add(str(directory), arcname=arcname, recursive=True)
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


def verify(path: Path, *, sha256: str | None, size: int | None = None) -> None:
    """Read the whole archive: the checksum and size match, gzip's CRC holds, every tar member reads."""
    if not path.is_file():
        raise CorruptBackupError(f"backup archive {path} is missing; this backup cannot be used")
    try:
        with open(path, "rb") as raw:
            reader = _HashingReader(raw)
            with tarfile.open(fileobj=io.BufferedReader(reader, _CHUNK), mode="r|gz") as tar:
                for member in tar:
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
    """Extract everything into `dest` (which must not exist), keeping modes, owners, times and links."""
    try:
        dest.mkdir(parents=True)
        with tarfile.open(path, mode="r:gz") as tar:
            tar.extractall(str(dest), filter=_inside(dest), numeric_owner=True)
    except tarfile.FilterError as err:
        shutil.rmtree(dest, ignore_errors=True)
        raise CorruptBackupError(f"backup archive {path} has a member that escapes its target: {err}") from err
    except (tarfile.TarError, EOFError, zlib.error) as err:
        shutil.rmtree(dest, ignore_errors=True)
        raise CorruptBackupError(f"backup archive {path} is corrupt ({err}); nothing was restored") from err
    except OSError as err:
        shutil.rmtree(dest, ignore_errors=True)
        raise StorageError(f"cannot extract backup archive {path} into {dest}: {err}") from err


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


def _inside(dest: Path) -> Any:
    """tarfile's `data` filter for its safety checks (no absolute paths, nothing outside `dest`, no
    devices), but the member itself kept as written, so modes and owners come back byte for byte."""

    def check(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        tarfile.data_filter(member, path)
        return member

    return check


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
