"""The gateway's own serial ports (RS-485 adapters) and the camera serial bridge.

``SerialPorts`` keeps named ports open through unplugs and errors, paces frames and bounds
what waits; ``SerialBridge`` relays a camera's serial data to a local port and back.
Their settings are in ``gateway.serial.settings``, which is pure: this module imports
nothing, so the configuration can use them without Twisted.
"""
