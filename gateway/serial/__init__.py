"""The gateway's own serial ports (RS-485 adapters) and the camera serial bridge.

``SerialPorts`` keeps named ports open through unplugs and errors, paces frames and bounds
what waits; ``SerialBridge`` relays a camera's serial data to a local port and back.
"""

from gateway.serial.bridge import (
    BridgeStatus,
    PendingCallback,
    SerialBridge,
    SerialBridgeSettings,
)
from gateway.serial.ports import (
    PARITIES,
    STOPBITS,
    PortState,
    PortStatus,
    ReceiveCallback,
    SerialPorts,
    SerialPortSettings,
    UnknownPort,
)

__all__ = [
    "PARITIES",
    "STOPBITS",
    "BridgeStatus",
    "PendingCallback",
    "SerialBridge",
    "SerialBridgeSettings",
    "PortState",
    "PortStatus",
    "ReceiveCallback",
    "SerialPortSettings",
    "SerialPorts",
    "UnknownPort",
]
