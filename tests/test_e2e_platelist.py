"""A site of 100 000 plates and 4 lanes on loopback, cameras simulated: one row
appended to the watched CSV file reaches each camera as that one row, whatever
the dialect, and the list stays in step everywhere. (How long plate replies
take meanwhile is measured in bench/, not asserted here.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from gateway.policy.cameralist import CameraRow
from gateway.simulator.camera import CameraEvent, SimulatedCamera
from gateway.simulator.config import CameraConfig
from gateway.simulator.firmware import HeldPlate
from gateway.store import PlateRow, Store
from support import CapturedLog, RunningGateway, loopback_config, start_gateway
from support.threads import global_reactor

pytestmark = pytest.mark.e2e

PLATES = 100_000
CAMERAS = (
    ("Lane 1", "d85b1269-8f940001", "vzenith"),
    ("Lane 2", "d85b1269-8f940002", "vzenith"),
    ("Lane 3", "d85b1269-8f940003", "vzenith"),
    ("Lane 4", "QFX2182310150004", "parkingcam"),
)


def plate(number: int) -> str:
    return f"粤B{number:05d}"


class OneRowTests(TestCase):
    timeout = 300

    async def until(self, condition: Callable[[], Any], seconds: float, what: str) -> None:
        for _ in range(int(seconds / 0.05)):  # bounded
            if condition():
                return
            await deferLater(global_reactor, 0.05, lambda: None)
        self.fail(f"timed out waiting for {what}")

    async def seed(self, state_dir: str) -> None:
        """The state of a site that ran before: the list stored, each camera
        holding it (as checkpointed then)."""
        store = await Store.open(global_reactor, state_dir)
        try:
            await store.write_plates([PlateRow(plate=plate(n), source="csv") for n in range(PLATES)])
            rows = {plate(n): CameraRow(plate(n)) for n in range(PLATES)}
            for _, serialno, dialect in CAMERAS:
                await store.save_camera_list(
                    serialno.casefold(), dialect=dialect, known=True, cleared=True, changes=rows
                )
        finally:
            await store.close()

    async def test_one_csv_row_reaches_each_camera_as_one_row(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        csv_path = directory / "plates.csv"
        csv_path.write_text(
            "plate\n" + "".join(f"{plate(n)}\n" for n in range(PLATES)), encoding="utf-8"
        )
        state_dir = str(directory / "state")
        await self.seed(state_dir)
        config = loopback_config(
            policy={"whitelist_csv": str(csv_path)},
            lane=[
                {"name": name, "camera": serialno, "camera_list_max": PLATES + 10}
                for name, serialno, _ in CAMERAS
            ],
        )
        gateway: RunningGateway = await start_gateway(config, state_dir)
        self.addCleanup(gateway.stop)
        edits: dict[str, list[str]] = {serialno: [] for _, serialno, _ in CAMERAS}

        def seen(event: CameraEvent) -> None:
            # Edits of the camera's list (a ParkingCam's list is also read back).
            if event.kind == "whitelist" and not event.text.startswith("query"):
                edits[event.serialno].append(event.text)

        held = tuple(HeldPlate(plate(n)) for n in range(PLATES))
        cameras: list[SimulatedCamera] = []
        for _, serialno, dialect in CAMERAS:
            heartbeat: dict[str, Any] = (
                {"heartbeat": "comet"}
                if dialect == "vzenith"
                else {"heartbeat": "common", "heartbeat_interval": 0.2}
            )
            camera = SimulatedCamera(
                global_reactor,
                CameraConfig(
                    serialno=serialno,
                    dialect=dialect,
                    servers=(f"http://127.0.0.1:{gateway.camera_port}",),
                    whitelist=held,
                    **heartbeat,
                ),
                on_event=seen,
            )
            camera.start()
            self.addCleanup(camera.stop)
            cameras.append(camera)
        sync = gateway.service.camera_sync
        assert sync is not None

        def all_in_sync() -> bool:
            states = [sync.state(serialno) for _, serialno, _ in CAMERAS]
            return all(state is not None and state.in_sync for state in states)

        await self.until(all_in_sync, 120, "every camera known to hold the list")
        # Nothing had changed: nothing was sent.
        self.assertEqual(edits, {serialno: [] for _, serialno, _ in CAMERAS})

        recomputes = sync.recomputes
        with CapturedLog() as captured:
            with csv_path.open("a", encoding="utf-8") as handle:
                handle.write("粤Z99999\n")
            await self.until(
                lambda: all("粤Z99999" in camera.whitelist for camera in cameras),
                60,
                "the new row in every camera",
            )
            await self.until(all_in_sync, 30, "every camera in sync again")
        # The import saw one change, and no camera's list was recomputed.
        imported = [text for text in captured.texts() if "Plate list imported" in text]
        self.assertEqual(len(imported), 1, imported)
        self.assertIn("(1 new, 0 changed, 0 removed, the rest unchanged)", imported[0])
        self.assertEqual(sync.recomputes, recomputes)
        for camera in cameras:
            self.assertEqual(len(camera.whitelist), PLATES + 1)
            # One edit each: a Vzenith reply carrying the one row, a ParkingCam
            # add command that grew the list by one.
            expected = (
                f"add 粤Z99999; {PLATES + 1} rows"
                if camera.config.dialect == "vzenith"
                else f"add -> {PLATES + 1} rows"
            )
            self.assertEqual(edits[camera.config.serialno], [expected])
        self.assertEqual(len(gateway.service.plate_list.index), PLATES + 1)
