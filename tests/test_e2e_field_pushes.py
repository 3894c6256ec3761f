"""Field pushes end to end: a ParkingCam camera set to GB2312 gets its whitelist in
GB2312 once its pushes have shown it, and its plates keep every field; the gateway
on loopback, the camera simulator."""

from __future__ import annotations

import pytest

from gateway.policy.whitelist import WhitelistEntry
from support import loopback_config, start_gateway
from support.simulator import PARKINGCAM, SimulatorTestCase


@pytest.mark.e2e
class GB2312ParkingCamTests(SimulatorTestCase):
    async def test_a_gb2312_camera_reads_its_whitelist_and_its_plates_are_kept(self) -> None:
        config = loopback_config(
            lane=[{"name": "Entrance", "camera": PARKINGCAM, "unknown_plate": "deny"}]
        )
        gateway = await start_gateway(config, self.mktemp())
        self.addCleanup(gateway.stop)
        self.gateway = gateway
        camera = self.camera(
            serialno=PARKINGCAM,
            dialect="parkingcam",
            charset="gb2312",
            heartbeat="common",
            heartbeat_interval=0.2,
            timeout=1.0,
            no_plate_rate=0.0,
        )
        # A plate push in GB2312 tells the gateway the camera's encoding.
        camera.read_plate("粤B00001")
        await self.until(lambda: camera.pushes["plate"] >= 1, 10, "the first plate")
        registered = gateway.service.registry.get(PARKINGCAM)
        assert registered is not None
        await self.until(lambda: registered.charset == "gb18030", 10, "the encoding learnt")
        whitelist = gateway.service.plate_list
        await whitelist.upsert(
            [WhitelistEntry(plate=f"粤B{n:05d}", source="admin") for n in range(12)]
        )
        expected = {f"粤B{n:05d}" for n in range(12)}
        await self.until(lambda: set(camera.whitelist) == expected, 30, "12 plates in the camera")
        sync = gateway.service.camera_sync

        def confirmed() -> bool:
            state = sync.state(PARKINGCAM)
            return state is not None and state.in_sync and len(state.work.has) == 12

        # The deletion comes once the adds are confirmed (a deletion while the add of the
        # same plate is on its way is another matter: see the whitelist sync).
        await self.until(confirmed, 30, "the adds confirmed")
        await whitelist.delete([f"粤B{n:05d}" for n in range(3)])
        expected -= {f"粤B{n:05d}" for n in range(3)}
        try:
            await self.until(lambda: set(camera.whitelist) == expected, 30, "3 plates deleted")
        except BaseException:
            state = gateway.service.camera_sync.state(PARKINGCAM)
            print("WL", sorted(camera.whitelist), "EXE", camera.executed[-12:])
            print("STATE", state.describe() if state else None, state.pending if state else None,
                  state.work.to_delete if state else None, list(state.incoming) if state else None)
            raise
        self.assertEqual(camera.whitelist_ignored_rows, 0)
        (first, *_) = reversed(await self.plate_events())
        self.assertEqual(first.license, "粤B00001")
        self.assertEqual(first.raw["dialect"], "parkingcam")
        self.assertEqual(first.raw["PlateResult"]["license"], "粤B00001")
