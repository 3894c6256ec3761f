"""Lane displays and voice boards: messages per decision, idle text, board clocks.

``LaneDisplays`` (``gateway.display.lanes``) renders each lane's messages into
board frames (``gateway.protocol.board``) and sends them through the lane's
camera or a serial port of the gateway (``gateway.serial``). The messages and
their fields are in ``gateway.display.templates`` and a lane's settings in
``gateway.display.settings``, both pure: this module imports nothing, so the
configuration can use them without Twisted.
"""
