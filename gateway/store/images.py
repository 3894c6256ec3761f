"""Image files on disk, one per event and kind.

Layout: ``<state_dir>/images/<YYYY-MM-DD>/<event id>-<kind>.jpg``, the day
being the gateway's receive day (UTC). File names come only from the event
id (made by :mod:`gateway.store.ids`) and the kind, never from anything the
camera sent. Day directories keep directories small and let retention drop
whole days (including files orphaned by a crash between writing an image and
committing its event).

Everything here blocks: it runs on the store's thread only.
"""

from __future__ import annotations

import os
import shutil
from datetime import date, datetime, timezone
from pathlib import Path

import attrs

from gateway.store.ids import is_valid_event_id
from gateway.store.records import IMAGE_KINDS

__all__ = ["ImageFiles", "PendingImage", "fsync_directory"]

_SUFFIX = ".jpg"


def fsync_directory(path: Path) -> None:
    """Make a directory's entries (new, renamed or removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@attrs.frozen
class PendingImage:
    """An image written under its temporary name, not yet synced (an open file)."""

    path: Path
    temporary: Path
    fd: int


class ImageFiles:
    """The image directory of one store."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def day_directory(self, received_at: datetime) -> Path:
        day = received_at.astimezone(timezone.utc).date()
        return self.root / day.isoformat()

    def path(self, event_id: str, kind: str, received_at: datetime) -> Path:
        """Where the image of ``kind`` of an event lives (whether or not it exists)."""
        if kind not in IMAGE_KINDS:
            raise ValueError(f"unknown image kind {kind!r}")
        if not is_valid_event_id(event_id):
            raise ValueError(f"not an event id: {event_id!r}")
        return self.day_directory(received_at) / f"{event_id}-{kind}{_SUFFIX}"

    def write(self, path: Path, data: bytes, synced_directories: set[Path]) -> None:
        """Write ``data`` to ``path`` and fsync the file (:meth:`start`, then
        :meth:`finish`)."""
        self.finish(self.start(path, data, synced_directories))

    def start(self, path: Path, data: bytes, synced_directories: set[Path]) -> PendingImage:
        """Write ``data`` for ``path`` under a temporary name, not yet synced:
        :meth:`finish` syncs it and gives it its name, :meth:`abandon` drops it.

        A batch writes all its files first and then syncs them: the file
        system writes the data of all of them at the first sync (one journal
        commit), the others then cost little, instead of a device flush each.
        The file is renamed only once synced, so a crash never leaves a torn
        image under the final name. The directory holding it is NOT fsynced
        here: the caller fsyncs every directory in ``synced_directories`` (to
        which this adds) once per batch with :meth:`sync_directories`.
        Directories created here are added with their parent, so the new
        entry is durable too.
        """
        directory = path.parent
        if not directory.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            directory.mkdir(exist_ok=True)
            synced_directories.add(self.root)
            synced_directories.add(self.root.parent)
        temporary = directory / f".{path.name}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except BaseException:
            os.close(fd)
            self.remove(temporary)
            raise
        synced_directories.add(directory)
        return PendingImage(path=path, temporary=temporary, fd=fd)

    def finish(self, pending: PendingImage) -> None:
        """Sync a started image and give it its name; on failure nothing of it is left."""
        try:
            try:
                os.fsync(pending.fd)
            finally:
                os.close(pending.fd)
            os.replace(pending.temporary, pending.path)
        except BaseException:
            self.remove(pending.temporary)
            raise

    def abandon(self, pending: PendingImage) -> None:
        """Drop a started image."""
        try:
            os.close(pending.fd)
        except OSError:
            pass
        self.remove(pending.temporary)

    @staticmethod
    def sync_directories(directories: set[Path]) -> None:
        """Fsync directories, deepest first (a new directory before its parent)."""
        for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
            fsync_directory(directory)

    @staticmethod
    def remove(path: Path) -> None:
        """Remove an image file; a file already gone is fine."""
        try:
            path.unlink()
        except FileNotFoundError:
            pass

    def remove_days_before(self, cutoff: date) -> int:
        """Remove whole day directories older than ``cutoff``; return how many.

        Every event of such a day is older than the retention, so whatever is
        left there is an orphan (a crash between writing and committing).
        """
        if not self.root.is_dir():
            return 0
        removed = 0
        for entry in self.root.iterdir():
            try:
                day = date.fromisoformat(entry.name)
            except ValueError:
                continue  # not one of ours
            if day < cutoff and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed
