"""twistd plugin: ``twistd -n anpr-gateway --config /etc/anpr-gateway/gateway.toml``.

Kept lazy: nothing of the gateway is imported until the plugin is used.
"""

from twisted.application.service import ServiceMaker

anpr_gateway = ServiceMaker(
    "anpr-gateway",
    "gateway.tap",
    "ANPR camera gateway: barrier decisions, event store and cloud link for a parking site.",
    "anpr-gateway",
)
