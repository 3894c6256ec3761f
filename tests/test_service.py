"""The service tree as the composition root builds it: its parts, their order and
what each configuration adds. Built on a memory reactor, never started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import IServiceCollection
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from gateway.camera.http import ConnectionLimits
from gateway.camera.registry import CameraRegistry
from gateway.config import ConfigError, parse_config
from gateway.reactor import as_gateway_reactor
from gateway.tap import build_service
from gateway.timers import Every

SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def names(service: Any) -> list[str]:
    return [child.name for child in service]


def tree(state_dir: Path, **sections: Any) -> Any:
    config = parse_config({"gateway": {"state_dir": str(state_dir), "timezone": "UTC"}, **sections})
    return build_service(config, as_gateway_reactor(MemoryReactorClock()))


def test_a_standalone_site_in_start_order(tmp_path: Path) -> None:
    root = tree(tmp_path)
    assert names(root) == [
        # The registry first, so it stops last: no request re-arms a camera
        # timer after it stopped.
        "cameras",
        "store",
        "background-work",
        "plate-list",
        "heap-sweep",
        "serial-ports",
        "displays",
        "serial-bridge",
        "camera-whitelist-sync",
        # After the store: it writes what is pending before the store closes.
        "occupancy",
        "camera-listener-1",
        "admin-accounts",
        "admin-sessions",
        "admin-listener-1",
        # Last: started when everything listens, stopped first.
        "systemd",
    ]
    assert root.upstream is None and root.admin is not None
    assert isinstance(root.getServiceNamed("cameras"), CameraRegistry)
    assert root.getServiceNamed("store") is root.store


def test_the_cloud_link_comes_after_what_it_uses(tmp_path: Path) -> None:
    root = tree(tmp_path, upstream={"url": "http://127.0.0.1:9", "secret": SECRET})
    order = names(root)
    assert order.index("upstream") > order.index("plate-list") > order.index("store")
    assert order.index("upstream") < order.index("camera-listener-1")
    assert root.upstream is root.getServiceNamed("upstream")
    assert root.upstream.config.gateway_id == root.config.gateway.id
    # The gate asks the cloud once there is one.
    assert root.cameras.gate.cloud is not None


def test_no_admin_listeners_means_no_admin(tmp_path: Path) -> None:
    root = tree(tmp_path, admin={"listen": []})
    assert root.admin is None
    assert "admin-accounts" not in names(root)
    assert [name for name in names(root) if "listener" in name] == ["camera-listener-1"]


def test_one_listener_per_endpoint(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        camera_server={"listen": ["tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.3"]},
        admin={"listen": ["tcp:0:interface=127.0.0.2"]},
    )
    listeners = [name for name in names(root) if "listener" in name]
    assert listeners == ["camera-listener-1", "camera-listener-2", "admin-listener-1"]
    assert len(root.listeners) == 3


def test_an_endpoint_that_cannot_be_parsed_names_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        tree(tmp_path, camera_server={"listen": ["tcp:8080", "carrier-pigeon:9"]})
    assert raised.value.path == "camera_server.listen[2]"


def test_lanes_reach_the_parts_that_work_per_lane(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        serial={"led1": {"device": "/dev/null"}},
        lane=[
            {"name": "Entrance", "camera": "CAM-1", "display": {"via": "serial", "port": "led1"}},
            {"name": "Exit", "camera": "cam-2", "direction": "out", "sync_whitelist": False},
        ],
    )
    assert root.displays.lanes == ["Entrance"]
    assert root.registry.get("cam-1") is not None and root.registry.get("cam-1").lane == "Entrance"
    settings = root.camera_sync.settings_for("cam-1")
    assert settings is not None and (settings.lane, settings.capacity) == ("Entrance", 10_000)
    assert root.camera_sync.settings_for("cam-2") is None
    assert root.plate_list.codec.lanes.canonical("exit") == "Exit"


def timers(service: Any) -> dict[str, float]:
    """Every periodic job under ``service``, by name, with its period."""
    found: dict[str, float] = {}
    for child in service:
        if isinstance(child, Every):
            assert child.name is not None  # an Every is always named
            found[child.name] = child.step
        if IServiceCollection.providedBy(child):
            found.update(timers(child))
    return found


def test_periodic_work_is_timer_services_in_the_tree(tmp_path: Path) -> None:
    csv = tmp_path / "plates.csv"
    csv.write_text("plate\n")
    root = tree(
        tmp_path,
        policy={"whitelist_csv": str(csv)},
        upstream={"url": "http://127.0.0.1:9", "secret": SECRET},
    )
    assert set(timers(root)) == {
        "retention",
        "csv-watch",
        "display-clocks",
        "camera-list-tick",
        "upstream-housekeeping",
        "occupancy-expiry",
    }
    assert all(step > 0 for step in timers(root).values())
    # Without a file to watch, nothing polls for one.
    assert "csv-watch" not in timers(tree(tmp_path / "other"))


def test_the_admin_listener_has_connection_limits(tmp_path: Path) -> None:
    root = tree(tmp_path, admin={"max_connections": 20, "max_connections_per_address": 3})
    (admin,) = [listener for listener in root.listeners if listener.key == "admin.listen[1]"]
    limits = admin.factory
    assert isinstance(limits, ConnectionLimits)
    assert (limits.max_connections, limits.max_per_address) == (20, 3)
    # Past the per-address limit a connection is refused at once.
    peer = IPv4Address("TCP", "127.0.0.9", 40000)
    opened = [limits.buildProtocol(peer) for _ in range(3)]
    for protocol in opened:
        assert protocol is not None
        protocol.makeConnection(StringTransport(peerAddress=peer))
    assert limits.buildProtocol(peer) is None
    assert limits.buildProtocol(IPv4Address("TCP", "127.0.0.10", 40000)) is not None
    # The connections end: their idle timers are not left on the reactor.
    for protocol in opened:
        assert protocol is not None
        protocol.connectionLost(Failure(ConnectionDone()))
