"""The camera simulator: faithful ANPR cameras (Vzenith and ParkingCam) for
trying a site without hardware, for end-to-end tests and for benchmarks.

``anpr-camera-sim`` (:mod:`gateway.simulator.cli`) is the command line; tests
use the API directly::

    config = CameraConfig(serialno="d85b1269-8f942256", servers=("http://127.0.0.1:8080",))
    camera = SimulatedCamera(reactor, config)
    camera.start()
    camera.read_plate("京A12345")
    ...
    camera.relay_pulses, camera.serial_written, camera.whitelist, camera.report()
    camera.executed, camera.ignored   # [(reply kind, field), ...]
    await camera.stop()

Replies are read by the firmware's rules (:mod:`gateway.simulator.firmware`),
never by the gateway's tolerant parser: a camera reads only the replies and
fields its dialect, firmware generation and heartbeat mode read (PROTOCOL.md
sections 3, 4, 7 and 9), and records every field it ignored.
"""

from gateway.simulator.camera import SimulatedCamera
from gateway.simulator.config import CameraConfig, fleet_configs
from gateway.simulator.fleet import CameraFleet

__all__ = ["CameraConfig", "CameraFleet", "SimulatedCamera", "fleet_configs"]
