"""Online backup and restore of a site's state: ``anpr-gateway-backup`` and
``anpr-gateway-restore``.

A backup is a directory::

    DEST/gateway.db          the database, a consistent copy of one instant
    DEST/images/<day>/...    the images that copy refers to
    DEST/config/...          the configuration file and the TLS files it names
    DEST/manifest.json       size and SHA-256 of every file above, the schema
                             version, the gateway's version, the time

The database is copied with SQLite's online backup API from one read
transaction, so the copy is the database as it was when the backup started,
while the gateway goes on writing (in WAL mode a reader never holds a writer).
The copy goes in steps with pauses between them, so the backup takes its share
of the disk and no more. The images copied are the ones that database copy
refers to: an event row and its pictures belong together.

A backup is restartable: run into the same DEST again, images already there
with the same size are kept (image files never change once written), and only
the manifest, written last, marks the backup complete. Images the snapshot no
longer refers to (gone by retention since the last backup) are removed from
DEST, so a nightly backup into one directory does not grow without bound.

A restore refuses while a gateway holds the state directory, checks every file
against the manifest and refuses a database of a newer schema than this
gateway's before anything is changed.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import attrs

from gateway import __version__
from gateway.store.database import DB_NAME, IMAGES_DIR, LOCK_NAME, from_us
from gateway.store.images import ImageFiles, fsync_directory
from gateway.store.schema import SCHEMA_VERSION

__all__ = [
    "BackupError",
    "BackupReport",
    "Manifest",
    "RestoreReport",
    "backup",
    "backup_main",
    "copy_database",
    "read_manifest",
    "restore",
    "restore_main",
    "state_dir_in_use",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
CONFIG_DIR = "config"
DEFAULT_CONFIG = "/etc/anpr-gateway/gateway.toml"
#: A manifest larger than this is not one of ours (about 2 million files).
MANIFEST_MAX_BYTES = 256 * 1024 * 1024
#: Database pages copied per step, and the pause between steps.
STEP_PAGES = 256
STEP_PAUSE_SECONDS = 0.005
_COPY_CHUNK = 1024 * 1024


class BackupError(Exception):
    """A backup or restore cannot go on; the message says why, in one line."""


@attrs.frozen
class Manifest:
    """What a backup holds. ``files`` maps a path relative to the backup
    directory to its size and SHA-256 (hex)."""

    gateway_version: str
    schema_version: int
    created_at: str
    state_dir: str
    config_file: str | None
    files: dict[str, tuple[int, str]]
    missing_images: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "gateway_version": self.gateway_version,
            "schema_version": self.schema_version,
            "created_at": self.created_at,
            "state_dir": self.state_dir,
            "config_file": self.config_file,
            "missing_images": self.missing_images,
            "files": {
                path: {"size": size, "sha256": digest}
                for path, (size, digest) in sorted(self.files.items())
            },
        }


@attrs.frozen
class BackupReport:
    manifest: Manifest
    images_copied: int
    images_kept: int
    images_removed: int
    database_bytes: int
    seconds: float


@attrs.frozen
class RestoreReport:
    manifest: Manifest
    state_dir: Path
    replaced: Path | None
    files: int


# -- helpers -------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_file(source: Path, target: Path) -> str:
    """Copy ``source`` to ``target`` through a temporary name, fsynced; the
    SHA-256 of what was written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    digest = hashlib.sha256()
    with source.open("rb") as reading, temporary.open("wb") as writing:
        while chunk := reading.read(_COPY_CHUNK):
            digest.update(chunk)
            writing.write(chunk)
        writing.flush()
        os.fsync(writing.fileno())
    os.replace(temporary, target)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def state_dir_in_use(state_dir: Path) -> bool:
    """Whether a running gateway holds ``state_dir`` (its flock on gateway.lock)."""
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


# -- the database ------------------------------------------------------------------


def copy_database(
    source: Path,
    target: Path,
    *,
    pages: int = STEP_PAGES,
    pause: float = STEP_PAUSE_SECONDS,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Copy the database ``source`` to ``target`` with SQLite's online backup
    API; return the copy's schema version.

    The copy is taken inside one read transaction on ``source``: every step
    reads the same snapshot (the database as it was when the transaction
    began), so writes by the running gateway neither restart the copy nor
    wait for it. ``target`` is replaced only once the copy is complete and
    checked; it is left in rollback-journal mode (one self-contained file).
    """
    if not source.is_file():
        raise BackupError(f"no database at {source}")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    # Read-only: never create a -wal or -shm owned by whoever runs the backup
    # in the gateway's state directory.
    reading = sqlite3.connect(f"file:{source}?mode=ro", uri=True, isolation_level=None, timeout=10)
    try:
        reading.execute("BEGIN")
        # The snapshot is fixed by the first read, not by BEGIN.
        reading.execute("SELECT count(*) FROM sqlite_master").fetchone()
        writing = sqlite3.connect(partial, isolation_level=None)
        try:
            reading.backup(writing, pages=pages, sleep=pause, progress=_progress(progress))
            writing.execute("PRAGMA journal_mode = DELETE")
            problems = [str(row[0]) for row in writing.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise BackupError(f"the copy of {source} does not check: {'; '.join(problems[:3])}")
            version = int(writing.execute("PRAGMA user_version").fetchone()[0])
        finally:
            writing.close()
        reading.execute("COMMIT")
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"cannot copy the database {source}: {exc}") from exc
    finally:
        reading.close()
        _match_owner(source)
    _fsync_file(partial)
    os.replace(partial, target)
    fsync_directory(target.parent)
    return version


def _match_owner(database: Path) -> None:
    """Give a -wal or -shm file that this process made (the gateway was not
    running) to the database's owner, or the gateway could not open it."""
    if os.geteuid() != 0:
        return
    try:
        owner = database.stat()
    except OSError:
        return
    for suffix in ("-wal", "-shm"):
        path = Path(f"{database}{suffix}")
        try:
            info = path.stat()
            if (info.st_uid, info.st_gid) != (owner.st_uid, owner.st_gid):
                os.chown(path, owner.st_uid, owner.st_gid)
        except OSError:
            continue


def _progress(
    progress: Callable[[int, int], None] | None,
) -> Callable[[int, int, int], object] | None:
    if progress is None:
        return None

    def report(status: int, remaining: int, total: int) -> None:
        progress(total - remaining, total)

    return report


def _snapshot_images(database: Path, state_dir: Path) -> Iterator[PurePosixPath]:
    """The image files the database copy refers to, relative to the state dir."""
    files = ImageFiles(state_dir / IMAGES_DIR)
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT id, received_at, image_full, image_crop FROM events "
            "WHERE image_full = 'present' OR image_crop = 'present'"
        )
        for event_id, received_at, full, crop in rows:
            for kind, state in (("full", full), ("crop", crop)):
                if state != "present":
                    continue
                try:
                    path = files.path(event_id, kind, from_us(received_at))
                except ValueError:
                    continue  # not a name the store makes: never a path to follow
                yield PurePosixPath(path.relative_to(state_dir).as_posix())
    finally:
        connection.close()


# -- the configuration ------------------------------------------------------------


def _load_config(path: str | None) -> Any:
    from gateway.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as error:
        raise BackupError(f"configuration: {error.full_message()}") from None


def _config_files(config: Any, config_file: Path) -> list[Path]:
    """The configuration file and the TLS files its listeners name."""
    files = [config_file]
    for description in (*config.camera_server.listen, *config.admin.listen):
        if not description.startswith("ssl:"):
            continue
        for part in description.split(":")[1:]:
            if part.startswith(("certKey=", "privateKey=", "extraCertChain=")):
                path = Path(part.split("=", 1)[1].replace("\\:", ":"))
                if path.is_file() and path not in files:
                    files.append(path)
    return files


# -- backup --------------------------------------------------------------------------


def _previous_hashes(dest: Path) -> dict[str, tuple[int, str]]:
    """The sizes and hashes of the last complete backup in ``dest``, if any."""
    try:
        return read_manifest(dest).files
    except BackupError:
        return {}


def backup(
    state_dir: Path,
    dest: Path,
    *,
    config_file: Path | None = None,
    config_files: Sequence[Path] = (),
    say: Callable[[str], None] = lambda line: None,
    pages: int = STEP_PAGES,
    pause: float = STEP_PAUSE_SECONDS,
) -> BackupReport:
    """Back up ``state_dir`` (and ``config_files``) into ``dest``."""
    started = time.monotonic()
    state_dir = state_dir.resolve()
    dest = dest.resolve()
    if dest == state_dir or state_dir in dest.parents:
        raise BackupError(f"the backup directory {dest} is inside the state directory {state_dir}")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create {dest}: {_describe(exc)}") from exc
    known = _previous_hashes(dest)
    # From here on the backup in dest is incomplete until the new manifest.
    (dest / MANIFEST_NAME).unlink(missing_ok=True)
    created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    files: dict[str, tuple[int, str]] = {}
    say(f"copying the database {state_dir / DB_NAME}")
    database = dest / DB_NAME
    version = copy_database(state_dir / DB_NAME, database, pages=pages, pause=pause)
    if version > SCHEMA_VERSION:
        raise BackupError(
            f"the database has schema version {version}, newer than this gateway's "
            f"({SCHEMA_VERSION}): back it up with the gateway that wrote it"
        )
    database_bytes = database.stat().st_size
    files[DB_NAME] = (database_bytes, _sha256(database))

    copied = kept = missing = 0
    wanted: set[str] = set()
    directories: set[Path] = set()
    for relative in _snapshot_images(database, state_dir):
        name = str(relative)
        source = state_dir / relative
        target = dest / relative
        try:
            size = source.stat().st_size
        except FileNotFoundError:
            missing += 1  # removed by retention since the snapshot
            continue
        wanted.add(name)
        if target.is_file() and target.stat().st_size == size:
            previous = known.get(name)
            digest = previous[1] if previous and previous[0] == size else _sha256(target)
            kept += 1
        else:
            try:
                digest = _copy_file(source, target)
            except FileNotFoundError:
                missing += 1
                wanted.discard(name)
                continue
            directories.add(target.parent)
            copied += 1
        files[name] = (size, digest)
        if (copied + kept) % 1000 == 0:
            say(f"images: {copied} copied, {kept} already there")
    for directory in directories:
        fsync_directory(directory)
    removed = _prune_images(dest, wanted)

    config_dir = dest / CONFIG_DIR
    if config_dir.exists():
        shutil.rmtree(config_dir)
    for path in config_files:
        target = config_dir / path.name
        try:
            digest = _copy_file(path, target)
        except OSError as exc:
            raise BackupError(f"cannot copy {path}: {_describe(exc)}") from exc
        files[f"{CONFIG_DIR}/{path.name}"] = (target.stat().st_size, digest)

    manifest = Manifest(
        gateway_version=__version__,
        schema_version=version,
        created_at=created_at,
        state_dir=str(state_dir),
        config_file=str(config_file) if config_file is not None else None,
        files=files,
        missing_images=missing,
    )
    _write_manifest(dest, manifest)
    return BackupReport(
        manifest=manifest,
        images_copied=copied,
        images_kept=kept,
        images_removed=removed,
        database_bytes=database_bytes,
        seconds=time.monotonic() - started,
    )


def _prune_images(dest: Path, wanted: set[str]) -> int:
    removed = 0
    root = dest / IMAGES_DIR
    if not root.is_dir():
        return 0
    for directory, _subdirectories, names in os.walk(root, topdown=False):
        for name in names:
            path = Path(directory) / name
            if path.relative_to(dest).as_posix() not in wanted:
                path.unlink()
                removed += 1
        if Path(directory) != root and not os.listdir(directory):
            os.rmdir(directory)
    return removed


def _write_manifest(dest: Path, manifest: Manifest) -> None:
    path = dest / MANIFEST_NAME
    temporary = dest / f".{MANIFEST_NAME}.tmp"
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(manifest.to_json(), handle, indent=1)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_directory(dest)


# -- reading a backup ---------------------------------------------------------------


def _safe_relative(name: object) -> PurePosixPath:
    """A manifest path, checked to stay inside the backup and to be one of
    the kinds a backup holds."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise BackupError(f"{MANIFEST_NAME}: not a file name: {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        raise BackupError(f"{MANIFEST_NAME}: not a file name inside the backup: {name!r}")
    if name != DB_NAME and path.parts[0] not in (IMAGES_DIR, CONFIG_DIR):
        raise BackupError(f"{MANIFEST_NAME}: not a file a backup holds: {name!r}")
    return path


def read_manifest(src: Path) -> Manifest:
    """The manifest of the backup in ``src``, checked for form (not the files)."""
    path = src / MANIFEST_NAME
    try:
        size = path.stat().st_size
        if size > MANIFEST_MAX_BYTES:
            raise BackupError(f"{path}: {size} bytes, too large for a manifest")
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise BackupError(
            f"no {MANIFEST_NAME} in {src}: not a backup, or one that did not finish"
        ) from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path}: unreadable: {_describe(exc)}") from exc
    try:
        if data.get("format") != MANIFEST_FORMAT:
            raise BackupError(f"{path}: unknown manifest format {data.get('format')!r}")
        files: dict[str, tuple[int, str]] = {}
        for name, entry in data["files"].items():
            _safe_relative(name)
            size, digest = entry["size"], entry["sha256"]
            if not isinstance(size, int) or not isinstance(digest, str) or len(digest) != 64:
                raise BackupError(f"{path}: bad entry for {name}")
            files[name] = (size, digest)
        if DB_NAME not in files:
            raise BackupError(f"{path}: the backup has no database")
        schema_version = data["schema_version"]
        if not isinstance(schema_version, int):
            raise BackupError(f"{path}: schema_version is not a number")
        return Manifest(
            gateway_version=str(data["gateway_version"]),
            schema_version=schema_version,
            created_at=str(data["created_at"]),
            state_dir=str(data["state_dir"]),
            config_file=None if data.get("config_file") is None else str(data["config_file"]),
            files=files,
            missing_images=int(data.get("missing_images", 0)),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise BackupError(f"{path}: not a backup manifest ({exc!r} missing or wrong)") from None


def verify_backup(src: Path) -> Manifest:
    """Read the manifest and check every file it lists against it, and the
    database's schema version against this gateway's."""
    manifest = read_manifest(src)
    if manifest.schema_version > SCHEMA_VERSION:
        raise BackupError(
            f"the backup's database has schema version {manifest.schema_version}, newer than "
            f"this gateway's ({SCHEMA_VERSION}, version {__version__}): restore it with "
            f"anpr-gateway {manifest.gateway_version} or newer"
        )
    for name, (size, digest) in manifest.files.items():
        path = src / name
        try:
            actual_size = path.stat().st_size
        except OSError:
            raise BackupError(f"{path}: listed in the manifest but missing") from None
        if actual_size != size or _sha256(path) != digest:
            raise BackupError(f"{path}: does not match the manifest (changed or damaged)")
    connection = sqlite3.connect(f"file:{src / DB_NAME}?mode=ro", uri=True)
    try:
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise BackupError(f"{src / DB_NAME}: not a database: {exc}") from exc
    finally:
        connection.close()
    if version != manifest.schema_version:
        raise BackupError(
            f"{src / DB_NAME}: schema version {version}, the manifest says {manifest.schema_version}"
        )
    return manifest


# -- restore ------------------------------------------------------------------------


class _StateLock:
    """The gateway's own flock on the state directory, held by the restore so
    that no gateway starts on a half-restored directory."""

    def __init__(self, state_dir: Path) -> None:
        path = state_dir / LOCK_NAME
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise BackupError(
                f"the state directory {state_dir} is in use by a running gateway: "
                "stop it first (systemctl stop anpr-gateway)"
            ) from None

    def release(self) -> None:
        os.close(self._fd)


def restore(src: Path, state_dir: Path, *, say: Callable[[str], None] = lambda line: None) -> RestoreReport:
    """Restore the backup in ``src`` into ``state_dir``.

    What ``state_dir`` held (database, images) is moved aside into
    ``state_dir/replaced-<time>/``, never deleted.
    """
    src = src.resolve()
    if state_dir_in_use(state_dir):
        raise BackupError(
            f"the state directory {state_dir} is in use by a running gateway: "
            "stop it first (systemctl stop anpr-gateway)"
        )
    say(f"checking {src} against its manifest")
    manifest = verify_backup(src)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create {state_dir}: {_describe(exc)}") from exc
    lock = _StateLock(state_dir)
    try:
        replaced = _move_aside(state_dir)
        if replaced is not None:
            say(f"moved what {state_dir} held to {replaced}")
        count = 0
        directories: set[Path] = {state_dir}
        for name in sorted(manifest.files):
            relative = _safe_relative(name)
            if relative.parts[0] == CONFIG_DIR:
                continue
            target = state_dir / relative
            _copy_file(src / relative, target)
            directories.add(target.parent)
            count += 1
        for directory in directories:
            fsync_directory(directory)
        _give_to_owner(state_dir)
    finally:
        lock.release()
    return RestoreReport(manifest=manifest, state_dir=state_dir, replaced=replaced, files=count)


def _move_aside(state_dir: Path) -> Path | None:
    present = [
        state_dir / name
        for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", IMAGES_DIR)
        if (state_dir / name).exists()
    ]
    if not present:
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = state_dir / f"replaced-{stamp}"
    counter = 1
    while aside.exists():
        counter += 1
        aside = state_dir / f"replaced-{stamp}-{counter}"
    aside.mkdir()
    for path in present:
        os.replace(path, aside / path.name)
    fsync_directory(state_dir)
    return aside


def _give_to_owner(state_dir: Path) -> None:
    """Run as root, make what was restored the state directory owner's (the
    service user), as the gateway wrote it."""
    if os.geteuid() != 0:
        return
    info = state_dir.stat()
    for directory, subdirectories, names in os.walk(state_dir):
        for name in (*subdirectories, *names):
            os.lchown(os.path.join(directory, name), info.st_uid, info.st_gid)


# -- the commands ----------------------------------------------------------------------


def _print(line: str) -> None:
    print(line, flush=True)


def backup_main(argv: Sequence[str] | None = None) -> int:
    """``anpr-gateway-backup [--config FILE] DEST``."""
    parser = argparse.ArgumentParser(
        prog="anpr-gateway-backup",
        description="Back up a gateway's database, images and configuration while it runs.",
    )
    parser.add_argument("dest", help="the backup directory (made if missing; reused if there)")
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"the gateway's configuration file (default: {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--state-dir", help="the state directory (default: gateway.state_dir of the configuration)"
    )
    parser.add_argument(
        "--step-pages",
        type=int,
        default=STEP_PAGES,
        help=f"database pages copied per step, {STEP_PAUSE_SECONDS * 1000:g} ms apart "
        f"(default: {STEP_PAGES}); fewer is gentler on a busy SD card, and slower",
    )
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.step_pages <= 1_000_000:
        parser.error("--step-pages must be between 1 and 1000000")
    try:
        config = _load_config(arguments.config)
        state_dir = Path(arguments.state_dir or config.gateway.state_dir)
        config_file = Path(arguments.config).resolve()
        report = backup(
            state_dir,
            Path(arguments.dest),
            config_file=config_file,
            config_files=_config_files(config, config_file),
            say=lambda line: _print(f"anpr-gateway-backup: {line}"),
            pages=arguments.step_pages,
        )
    except (BackupError, OSError) as exc:
        message = _describe(exc) if isinstance(exc, OSError) else str(exc)
        print(f"anpr-gateway-backup: error: {message}", file=sys.stderr)
        return 1
    manifest = report.manifest
    missing = (
        f", {manifest.missing_images} gone by retention meanwhile" if manifest.missing_images else ""
    )
    _print(
        f"anpr-gateway-backup: ok: {Path(arguments.dest).resolve()}: database "
        f"{report.database_bytes} bytes (schema {manifest.schema_version}), images "
        f"{report.images_copied} copied, {report.images_kept} already there, "
        f"{report.images_removed} removed{missing}; {len(manifest.files)} files in "
        f"{MANIFEST_NAME}; {report.seconds:.1f} s"
    )
    return 0


def restore_main(argv: Sequence[str] | None = None) -> int:
    """``anpr-gateway-restore [--config FILE | --state-dir DIR] SRC``."""
    parser = argparse.ArgumentParser(
        prog="anpr-gateway-restore",
        description="Restore a backup made by anpr-gateway-backup (the gateway must be stopped).",
    )
    parser.add_argument("src", help="the backup directory")
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"the gateway's configuration file, for its state_dir (default: {DEFAULT_CONFIG})",
    )
    parser.add_argument("--state-dir", help="restore into this directory instead")
    arguments = parser.parse_args(argv)
    try:
        if arguments.state_dir:
            state_dir = Path(arguments.state_dir)
        else:
            state_dir = Path(_load_config(arguments.config).gateway.state_dir)
        report = restore(
            Path(arguments.src),
            state_dir,
            say=lambda line: _print(f"anpr-gateway-restore: {line}"),
        )
    except (BackupError, OSError) as exc:
        message = _describe(exc) if isinstance(exc, OSError) else str(exc)
        print(f"anpr-gateway-restore: error: {message}", file=sys.stderr)
        return 1
    manifest = report.manifest
    _print(
        f"anpr-gateway-restore: ok: {report.state_dir}: the state of {manifest.created_at} "
        f"(gateway {manifest.gateway_version}, schema {manifest.schema_version}), "
        f"{report.files} files"
    )
    if any(name.startswith(f"{CONFIG_DIR}/") for name in manifest.files):
        _print(
            f"anpr-gateway-restore: the configuration was not changed; the backup's is in "
            f"{Path(arguments.src).resolve() / CONFIG_DIR}"
        )
    if report.replaced is not None:
        _print(
            f"anpr-gateway-restore: the replaced state is in {report.replaced}: "
            "remove it once the restored gateway runs"
        )
    return 0
