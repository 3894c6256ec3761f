"""Online backup and restore (gateway/backup.py) of a real store: its
database copied through SQLite's backup API while the store is open, the
images the copy refers to, a manifest that a restore checks before it
changes anything."""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from datetime import timedelta
from pathlib import Path

from gateway.backup import (
    MANIFEST_NAME,
    BackupError,
    backup,
    backup_main,
    read_manifest,
    restore,
    restore_main,
    state_dir_in_use,
)
from gateway.store.schema import SCHEMA_VERSION
from support.store import NOW, StoreTestCase, db_rows, plate_record

FULL = b"\xff\xd8\xff\xe0 a full picture" + bytes(range(256)) * 8
CROP = b"\xff\xd8\xff\xe0 the plate"


class BackupTests(StoreTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.work = Path(tempfile.mkdtemp(prefix="anpr-backup-test-"))
        self.addCleanup(shutil.rmtree, self.work, True)
        self.dest = self.work / "backup"

    async def fill(self, count: int, start: int = 1) -> list[str]:
        if not hasattr(self, "store"):
            self.store = await self.open_store()
        store = self.store
        ids = []
        for plateid in range(start, start + count):
            record = plate_record(plateid, received_at=NOW + timedelta(seconds=plateid))
            await store.commit_event(record, [("full", FULL), ("crop", CROP)])
            ids.append(record.id)
        return ids

    async def test_backup_of_an_open_store_restores_every_event_and_image(self) -> None:
        ids = await self.fill(5)
        # The store is open: its lock is held, as by a running gateway.
        self.assertTrue(state_dir_in_use(self.state_dir))
        report = backup(self.state_dir, self.dest)
        self.assertEqual(report.images_copied, 10)
        self.assertEqual(report.manifest.schema_version, SCHEMA_VERSION)

        fresh = self.work / "fresh"
        restored = restore(self.dest, fresh)
        self.assertIsNone(restored.replaced)
        rows = db_rows(fresh, "SELECT id FROM events ORDER BY seq")
        self.assertEqual([row[0] for row in rows], ids)
        self.assertEqual(db_rows(fresh, "PRAGMA integrity_check"), [("ok",)])
        images = sorted(path.read_bytes() for path in (fresh / "images").rglob("*.jpg"))
        self.assertEqual(images, sorted([FULL, CROP] * 5))
        manifest = json.loads((self.dest / MANIFEST_NAME).read_text())
        self.assertEqual(len(manifest["files"]), 11)
        self.assertEqual(manifest["files"]["gateway.db"]["size"], (self.dest / "gateway.db").stat().st_size)

    async def test_backup_again_copies_only_new_images_and_drops_gone_ones(self) -> None:
        await self.fill(3)
        backup(self.state_dir, self.dest)
        record = plate_record(99, received_at=NOW + timedelta(days=1))
        await self.store.commit_event(record, [("full", FULL)])
        # An interrupted copy leaves a temporary file; a file no event refers to is dropped.
        stray = self.dest / "images" / "1999-01-01" / "stray.jpg"
        stray.parent.mkdir(parents=True)
        stray.write_bytes(b"old")
        again = backup(self.state_dir, self.dest)
        self.assertEqual((again.images_copied, again.images_kept, again.images_removed), (1, 6, 1))
        self.assertFalse(stray.parent.exists())
        self.assertEqual(len(read_manifest(self.dest).files), 8)

    async def test_restore_refuses_a_state_dir_held_by_a_gateway(self) -> None:
        await self.fill(1)
        backup(self.state_dir, self.dest)
        with self.assertRaisesRegex(BackupError, "in use by a running gateway"):
            restore(self.dest, self.state_dir)
        self.assertEqual(len(db_rows(self.state_dir, "SELECT id FROM events")), 1)

    async def test_restore_moves_the_old_state_aside(self) -> None:
        await self.fill(2)
        backup(self.state_dir, self.dest)
        await self.fill(1, start=50)
        await self.store.close()
        report = restore(self.dest, self.state_dir)
        assert report.replaced is not None
        self.assertEqual(len(db_rows(self.state_dir, "SELECT id FROM events")), 2)
        self.assertEqual(len(db_rows(report.replaced, "SELECT id FROM events")), 3)

    async def test_restore_refuses_a_damaged_backup_before_changing_anything(self) -> None:
        await self.fill(2)
        backup(self.state_dir, self.dest)
        (image,) = list((self.dest / "images").rglob("*-crop.jpg"))[:1]
        image.write_bytes(CROP[:-1] + b"X")
        fresh = self.work / "fresh"
        with self.assertRaisesRegex(BackupError, "does not match the manifest"):
            restore(self.dest, fresh)
        self.assertFalse((fresh / "gateway.db").exists())

    async def test_restore_refuses_a_newer_schema(self) -> None:
        await self.fill(1)
        backup(self.state_dir, self.dest)
        manifest = json.loads((self.dest / MANIFEST_NAME).read_text())
        manifest["schema_version"] = SCHEMA_VERSION + 1
        (self.dest / MANIFEST_NAME).write_text(json.dumps(manifest))
        with self.assertRaisesRegex(BackupError, "newer than this gateway's"):
            restore(self.dest, self.work / "fresh")

    async def test_restore_refuses_a_manifest_naming_a_file_outside_the_backup(self) -> None:
        await self.fill(1)
        backup(self.state_dir, self.dest)
        manifest = json.loads((self.dest / MANIFEST_NAME).read_text())
        manifest["files"]["images/../../etc/passwd"] = {"size": 1, "sha256": "0" * 64}
        (self.dest / MANIFEST_NAME).write_text(json.dumps(manifest))
        with self.assertRaisesRegex(BackupError, "not a file name inside the backup"):
            restore(self.dest, self.work / "fresh")

    async def test_an_unfinished_backup_is_not_restored(self) -> None:
        await self.fill(1)
        backup(self.state_dir, self.dest)
        (self.dest / MANIFEST_NAME).unlink()
        with self.assertRaisesRegex(BackupError, "did not finish"):
            restore(self.dest, self.work / "fresh")

    async def test_the_commands_print_one_line_results(self) -> None:
        await self.fill(2)
        key = self.work / "site.key"
        key.write_text("a key")
        config = self.work / "gateway.toml"
        config.write_text(
            f'[gateway]\nstate_dir = "{self.state_dir}"\n'
            f'[camera_server]\nlisten = ["tcp:0", "ssl:0:privateKey={key}:certKey={key}"]\n'
        )
        output = self.capture(backup_main, ["--config", str(config), str(self.dest)])
        self.assertEqual(output[0], 0)
        self.assertRegex(output[1], r"anpr-gateway-backup: ok: .*images 4 copied, 0 already there")
        self.assertEqual((self.dest / "config" / "site.key").read_text(), "a key")
        self.assertEqual((self.dest / "config" / "gateway.toml").read_text(), config.read_text())
        refused = self.capture(restore_main, ["--config", str(config), str(self.dest)])
        self.assertEqual(refused[0], 1)
        self.assertRegex(refused[2], r"^anpr-gateway-restore: error: the state directory .* is in use")
        fresh = self.work / "fresh"
        done = self.capture(restore_main, ["--state-dir", str(fresh), str(self.dest)])
        self.assertEqual(done[0], 0, done)
        self.assertIn("the configuration was not changed", done[1])
        # What was restored opens as a database.
        connection = sqlite3.connect(fresh / "gateway.db")
        self.assertEqual(connection.execute("SELECT count(*) FROM events").fetchone(), (2,))
        connection.close()

    def capture(self, main: object, argv: list[str]) -> tuple[int, str, str]:
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(argv)  # type: ignore[operator]
        return status, out.getvalue(), err.getvalue()
