"""The configuration file: defaults, the reference file, and every error message."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.admin.settings import AdminSettings, AttentionSettings
from gateway.camera.settings import CameraServerSettings
from gateway.config import ConfigError, GatewayConfig, load_config, main, parse_config
from gateway.display.settings import DisplaySettings, MessageChange
from gateway.mqtt.settings import MqttSettings
from gateway.policy.settings import PolicySettings
from gateway.schema import Section
from gateway.serial.settings import SerialBridgeSettings, SerialPortSettings
from gateway.site import AreaSettings, LaneSettings, OccupancySettings, SiteSettings
from gateway.store.settings import StoreSettings
from gateway.upstream.settings import UpstreamSettings

REFERENCE = Path(__file__).resolve().parent.parent / "etc" / "gateway.toml"


def error_of(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value


def lane(**keys: Any) -> dict[str, Any]:
    return {"name": "Entrance", "camera": "d85b1269-8f942256", **keys}


# ---------------------------------------------------------------- defaults


def test_builtin_defaults_are_the_demo_site(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.camera_server == CameraServerSettings(
        listen=("tcp:8080",),
        comet_hold_seconds=20.0,
        max_body_bytes=8_388_608,
        offline_missed_intervals=3,
        idle_timeout_seconds=75,
    )
    assert config.admin == AdminSettings(listen=("tcp:8081:interface=127.0.0.1",))
    assert config.policy == PolicySettings(
        unknown_plate="deny",
        duplicate_window_seconds=10.0,
        max_plate_distance=0,
        whitelist_csv=None,
    )
    assert config.store == StoreSettings(
        image_retention_days=30,
        image_max_bytes=2 * 1024**3,
        event_retention_days=400,
        max_db_bytes=4 * 1024**3,
    )
    assert tuple(config.lanes) == ()
    assert config.gateway.state_dir == str(tmp_path / "anpr-gateway-state")
    assert os.path.isabs(config.gateway.state_dir)
    assert config.source == "<built-in defaults>"


def test_an_empty_file_gives_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.toml").write_text("")
    from_file = load_config(tmp_path / "empty.toml")
    assert attrs.evolve(from_file, source="x") == attrs.evolve(load_config(None), source="x")
    assert from_file.source == str(tmp_path / "empty.toml")


def test_gateway_id_defaults_to_the_host_name() -> None:
    hostname = socket.gethostname()
    expected = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in hostname)
    assert parse_config({}).gateway.id == (expected[:64] or "anpr-gateway")


def test_gateway_id_default_is_made_valid_from_an_odd_host_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "booth pc#1" + "x" * 80)
    gateway_id = parse_config({}).gateway.id
    assert gateway_id.startswith("booth-pc-1")
    assert len(gateway_id) == 64
    # and the default is itself a valid explicit id
    assert parse_config({"gateway": {"id": gateway_id}}).gateway.id == gateway_id


def test_timezone_defaults_to_the_zone_in_tz(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    assert parse_config({}).gateway.timezone == "America/New_York"


def test_timezone_default_ignores_a_tz_that_is_not_a_zone_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "Not/A_Zone")
    zone = parse_config({}).gateway.timezone
    assert zone != "Not/A_Zone"
    # whatever was found, it is valid as an explicit setting
    assert parse_config({"gateway": {"timezone": zone}}).gateway.timezone == zone


def test_relative_state_dir_is_resolved_against_the_current_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    config = parse_config({"gateway": {"state_dir": "state/here"}})
    assert config.gateway.state_dir == str(tmp_path / "state" / "here")


def test_values_are_frozen() -> None:
    config = parse_config({"lane": [lane()]})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.camera_server.comet_hold_seconds = 5  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.lanes[0].barrier_channel = 2  # type: ignore[misc]


# ---------------------------------------------------------------- reference file


def test_reference_file_loads_with_the_example_lanes() -> None:
    config = load_config(REFERENCE)
    assert config.gateway.state_dir == "/var/lib/anpr-gateway"
    assert tuple(config.lanes) == (
        LaneSettings(
            name="Entrance",
            camera="d85b1269-8f942256",
            direction="in",
            barrier_channel=0,
            heartbeat="auto",
            unknown_plate=None,
            sync_whitelist=True,
            display=DisplaySettings(
                via="camera",
                camera_channel=0,
                port=None,
                address=0,
                dwell_seconds=10.0,
                free_spaces=None,
                display_lines=4,
                idle=MessageChange(lines=("{lane}", "{time}")),
                messages={
                    "open": MessageChange(
                        lines=("{plate}", "欢迎光临"), voice="{plate}，欢迎光临", colour="00FF00"
                    ),
                },
            ),
        ),
        LaneSettings(
            name="Exit",
            camera="QFX2182310150262",
            direction="out",
            barrier_channel=0,
            heartbeat="auto",
            unknown_plate="allow",
            sync_whitelist=True,
        ),
    )
    entrance, exit_lane = config.lanes
    assert config.unknown_plate_for(entrance) == "deny"
    assert config.unknown_plate_for(exit_lane) == "allow"
    assert config.unknown_plate_for(None) == "deny"


def test_reference_file_documents_every_key() -> None:
    reference = REFERENCE.read_text()
    for section, cls in [
        ("[gateway]", SiteSettings),
        ("[camera_server]", CameraServerSettings),
        ("[admin]", AdminSettings),
        ("[policy]", PolicySettings),
        ("[store]", StoreSettings),
        ("[[lane]]", LaneSettings),
        ("[lane.display]", DisplaySettings),
        ("[lane.serial_bridge]", SerialBridgeSettings),
        ("[serial.", SerialPortSettings),
        ("[upstream]", UpstreamSettings),
        ("[mqtt]", MqttSettings),
        ("[occupancy]", OccupancySettings),
        ("[[occupancy.areas]]", AreaSettings),
        ("[admin.attention]", AttentionSettings),
    ]:
        assert section in reference
        for key in Section(cls).key_names:
            assert key in reference, (section, key)
    assert "ssl:443:privateKey=/etc/anpr-gateway/site.key:certKey=/etc/anpr-gateway/site.crt" in reference


def test_lane_lookup_by_camera_is_case_insensitive() -> None:
    config = load_config(REFERENCE)
    assert config.lanes.for_camera("D85B1269-8F942256") is config.lanes[0]
    assert config.lanes.for_camera("qfx2182310150262") is config.lanes[1]
    assert config.lanes.for_camera("QFX2182310150263") is None
    assert config.lanes.named("exit") is config.lanes[1]
    assert config.lanes.named("Entrance") is config.lanes[0]
    assert config.lanes.named("Side gate") is None


def test_lane_defaults() -> None:
    (only,) = parse_config({"lane": [lane()]}).lanes
    assert (only.direction, only.barrier_channel, only.heartbeat, only.unknown_plate) == (
        "in",
        0,
        "auto",
        None,
    )


def test_admin_may_be_disabled() -> None:
    assert parse_config({"admin": {"listen": []}}).admin.listen == ()


def test_comet_hold_accepts_integers_and_fractions() -> None:
    assert parse_config({"camera_server": {"comet_hold_seconds": 25}}).camera_server.comet_hold_seconds == 25.0
    assert parse_config({"camera_server": {"comet_hold_seconds": 1.5}}).camera_server.comet_hold_seconds == 1.5


# ---------------------------------------------------------------- errors


def test_error_message_format() -> None:
    error = error_of({"camera_server": {"comet_hold_seconds": 40}})
    assert error.path == "camera_server.comet_hold_seconds"
    assert error.reason == "must be between 1 and 28, got 40"
    assert str(error) == "camera_server.comet_hold_seconds: must be between 1 and 28, got 40"
    assert error.source == "<config>"


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        # ranges
        ({"camera_server": {"comet_hold_seconds": 0.5}}, "camera_server.comet_hold_seconds", "must be between 1 and 28, got 0.5"),
        ({"camera_server": {"comet_hold_seconds": float("nan")}}, "camera_server.comet_hold_seconds", "must be between 1 and 28, got nan"),
        ({"camera_server": {"max_body_bytes": 1024}}, "camera_server.max_body_bytes", "must be between 65536 and 67108864, got 1024"),
        ({"camera_server": {"max_record_bytes": 1024}}, "camera_server.max_record_bytes", "must be between 4096 and 1048576, got 1024"),
        ({"camera_server": {"max_field_chars": 10}}, "camera_server.max_field_chars", "must be between 64 and 1048576, got 10"),
        ({"camera_server": {"max_field_items": 200_000}}, "camera_server.max_field_items", "must be between 8 and 100000, got 200000"),
        ({"camera_server": {"max_field_nesting": 2}}, "camera_server.max_field_nesting", "must be between 4 and 64, got 2"),
        ({"upstream": {"url": "https://cloud.example", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "batch_max_bytes": 1000}}, "upstream.batch_max_bytes", "must be between 65536 and 67108864, got 1000"),
        ({"camera_server": {"offline_missed_intervals": 0}}, "camera_server.offline_missed_intervals", "must be between 1 and 100, got 0"),
        ({"camera_server": {"idle_timeout_seconds": 3601}}, "camera_server.idle_timeout_seconds", "must be between 5 and 3600, got 3601"),
        ({"camera_server": {"request_timeout_seconds": 1}}, "camera_server.request_timeout_seconds", "must be between 2 and 600, got 1"),
        ({"camera_server": {"request_timeout_seconds": 5, "header_timeout_seconds": 10}}, "camera_server.request_timeout_seconds", "must be at least header_timeout_seconds (10)"),
        ({"camera_server": {"min_body_bytes_per_second": -1}}, "camera_server.min_body_bytes_per_second", "must be between 0 and 104857600, got -1"),
        ({"camera_server": {"body_memory_budget_bytes": 65536}}, "camera_server.body_memory_budget_bytes", "must be between 131072 and 17179869184, got 65536"),
        ({"camera_server": {"body_memory_budget_bytes": 16_777_215}}, "camera_server.body_memory_budget_bytes", "must be at least twice max_body_bytes (16777216)"),
        ({"admin": {"header_timeout_seconds": 0.5}}, "admin.header_timeout_seconds", "must be between 1 and 120, got 0.5"),
        ({"admin": {"request_timeout_seconds": 20, "header_timeout_seconds": 30}}, "admin.request_timeout_seconds", "must be at least header_timeout_seconds (30)"),
        ({"admin": {"body_memory_budget_bytes": 1_000_000}}, "admin.body_memory_budget_bytes", "must be between 67108864 and 17179869184, got 1000000"),
        ({"admin": {"idle_timeout_seconds": 1}}, "admin.idle_timeout_seconds", "must be between 5 and 3600, got 1"),
        ({"lane": [lane(barrier_channel=4)]}, "lane[1].barrier_channel", "must be between 0 and 3, got 4"),
        # types
        ({"camera_server": {"idle_timeout_seconds": "20"}}, "camera_server.idle_timeout_seconds", 'must be an integer, got "20"'),
        ({"camera_server": {"idle_timeout_seconds": 20.0}}, "camera_server.idle_timeout_seconds", "must be an integer, got 20.0"),
        ({"lane": [lane(barrier_channel=True)]}, "lane[1].barrier_channel", "must be an integer, got true"),
        ({"camera_server": {"comet_hold_seconds": "20"}}, "camera_server.comet_hold_seconds", 'must be a number, got "20"'),
        ({"camera_server": {"comet_hold_seconds": False}}, "camera_server.comet_hold_seconds", "must be a number, got false"),
        ({"gateway": {"state_dir": 5}}, "gateway.state_dir", "must be a string, got 5"),
        ({"camera_server": {"listen": "tcp:8080"}}, "camera_server.listen", 'must be an array of strings, got "tcp:8080"'),
        ({"camera_server": {"listen": ["tcp:8080", 8443]}}, "camera_server.listen[2]", "must be a string, got 8443"),
        ({"camera_server": 8080}, "camera_server", "must be a table, got 8080"),
        ({"lane": [lane(), "Exit"]}, "lane[2]", 'must be a table, got "Exit"'),
        ({"lane": {"name": "Entrance"}}, "lane", "must be an array of tables (write [[lane]], not [lane]), got a table"),
        # enums
        ({"policy": {"unknown_plate": "Deny"}}, "policy.unknown_plate", 'must be one of "deny", "allow", got "Deny"'),
        ({"lane": [lane(direction="both")]}, "lane[1].direction", 'must be one of "in", "out", got "both"'),
        ({"lane": [lane(heartbeat="long")]}, "lane[1].heartbeat", 'must be one of "auto", "comet", "common", "off", got "long"'),
        ({"lane": [lane(unknown_plate=1)]}, "lane[1].unknown_plate", 'must be a string, one of "deny", "allow", got 1'),
        # strings
        ({"gateway": {"id": "north car park"}}, "gateway.id", 'must be 1-64 characters of A-Z, a-z, 0-9, ".", "_", "-", got "north car park"'),
        ({"gateway": {"id": "x" * 65}}, "gateway.id", f'must be 1-64 characters of A-Z, a-z, 0-9, ".", "_", "-", got "{"x" * 65}"'),
        ({"gateway": {"timezone": "Europe/Nowhere"}}, "gateway.timezone", 'must be an IANA time zone name such as "Europe/Paris", got "Europe/Nowhere"'),
        ({"gateway": {"timezone": "../../etc/passwd"}}, "gateway.timezone", 'must be an IANA time zone name such as "Europe/Paris", got "../../etc/passwd"'),
        ({"gateway": {"state_dir": ""}}, "gateway.state_dir", "must not be empty"),
        ({"lane": [lane(name="  ")]}, "lane[1].name", "must not be empty"),
        ({"lane": [lane(camera="d85b1269 8f942256")]}, "lane[1].camera", 'must not contain spaces, got "d85b1269 8f942256"'),
        ({"lane": [lane(name="Entrance\n")]}, "lane[1].name", 'must not contain control characters, got "Entrance\\n"'),
        # listeners
        ({"camera_server": {"listen": []}}, "camera_server.listen", "must list at least 1 endpoint, got an empty array"),
        ({"camera_server": {"listen": ["tcp:8080", ""]}}, "camera_server.listen[2]", "must not be empty"),
        ({"camera_server": {"listen": ["tcp:8080", "tcp:8080"]}}, "camera_server.listen[2]", '"tcp:8080" is already listed at camera_server.listen[1]'),
        ({"admin": {"listen": ["tcp:8080"]}}, "admin.listen[1]", '"tcp:8080" is also a camera_server listener'),
        ({"admin": {"wall_session_days": 0}}, "admin.wall_session_days", "must be between 1 and 3650, got 0"),
        # required
        ({"lane": [{"camera": "d85b1269-8f942256"}]}, "lane[1].name", "missing required key"),
        ({"lane": [lane(), {"name": "Exit"}]}, "lane[2].camera", "missing required key"),
        # duplicates across lanes, case-insensitive
        ({"lane": [lane(), lane(name="Exit", camera="D85B1269-8F942256")]}, "lane[2].camera", 'camera "D85B1269-8F942256" is already in lane "Entrance"'),
        ({"lane": [lane(), lane(name="entrance", camera="QFX2182310150262")]}, "lane[2].name", 'lane name "entrance" is already used by another lane'),
        ({"lane": [lane(camera_list_max=0)]}, "lane[1].camera_list_max", "must be between 1 and 200000, got 0"),
        ({"lane": [lane(cloud_overrides_blacklist="yes")]}, "lane[1].cloud_overrides_blacklist", 'must be true or false, got "yes"'),
    ],
)
def test_invalid_values_name_the_key_and_the_reason(data: dict[str, Any], path: str, reason: str) -> None:
    error = error_of(data)
    assert (error.path, error.reason) == (path, reason)


@pytest.mark.parametrize(
    ("data", "path", "known"),
    [
        ({"lanes": []}, "lanes", "admin, camera_server, gateway, lane, mqtt, occupancy, policy, serial, store, upstream"),
        ({"camera_server": {"comet_hold": 20}}, "camera_server.comet_hold", "allowed_cameras, allowed_networks, body_memory_budget_bytes, comet_hold_seconds, header_timeout_seconds, idle_timeout_seconds, listen, max_body_bytes, max_connections, max_connections_per_address, max_field_chars, max_field_items, max_field_nesting, max_record_bytes, min_body_bytes_per_second, offline_missed_intervals, request_timeout_seconds"),
        ({"lane": [lane(), lane(name="Exit", camera="Q", barrier=1)]}, "lane[2].barrier", "address, ask_cloud, barrier_channel, camera, camera_list_max, cloud_overrides_blacklist, direction, display, heartbeat, name, serial_bridge, sync_whitelist, unknown_plate"),
    ],
)
def test_unknown_keys_are_errors_listing_the_known_ones(data: dict[str, Any], path: str, known: str) -> None:
    error = error_of(data)
    assert error.path == path
    assert error.reason.startswith("unknown key (known: ")
    listed = error.reason.removeprefix("unknown key (known: ").removesuffix(")")
    assert sorted(listed.split(", ")) == known.split(", ")


def test_an_unknown_key_is_reported_before_a_missing_one() -> None:
    # "nmae" explains why "name" is missing.
    error = error_of({"lane": [{"nmae": "Entrance", "camera": "X"}]})
    assert error.path == "lane[1].nmae"


def test_toml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    config_file = tmp_path / "site.toml"
    config_file.write_text('[camera_server]\nlisten = ["tcp:8080"]\ncomet_hold_seconds = = 20\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert caught.value.path == str(config_file)
    assert caught.value.reason.startswith("invalid TOML at line 3, column 22: ")
    assert str(caught.value).startswith(f"{config_file}: invalid TOML at line 3, column 22: ")


def test_toml_error_at_end_of_document_still_names_a_line(tmp_path: Path) -> None:
    config_file = tmp_path / "site.toml"
    config_file.write_text('[policy]\nunknown_plate = "deny')
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert caught.value.path == str(config_file)
    assert caught.value.reason.startswith("invalid TOML at line 2, column ")


def test_validation_error_from_a_file_records_the_file(tmp_path: Path) -> None:
    config_file = tmp_path / "site.toml"
    config_file.write_text("[[lane]]\nname = \"Entrance\"\ncamera = \"A\"\nbarrier_channel = 7\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert str(caught.value) == "lane[1].barrier_channel: must be between 0 and 3, got 7"
    assert caught.value.source == str(config_file)
    assert caught.value.full_message() == f"{config_file}: lane[1].barrier_channel: must be between 0 and 3, got 7"


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert caught.value.path == str(missing)
    assert caught.value.reason == "cannot read: No such file or directory"


def test_directory_instead_of_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert caught.value.path == str(tmp_path)
    assert caught.value.reason.startswith("cannot read: ")


def test_non_utf8_file_is_named(tmp_path: Path) -> None:
    config_file = tmp_path / "site.toml"
    config_file.write_bytes(b'[lane]\nname = "Entr\xe9e"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert caught.value.path == str(config_file)
    assert caught.value.reason == "not UTF-8 text (byte 19)"


# ---------------------------------------------------------------- properties

INTEGER_KEYS = [
    ("camera_server", "max_body_bytes", 65_536, 67_108_864),
    ("camera_server", "max_record_bytes", 4_096, 1_048_576),
    ("camera_server", "offline_missed_intervals", 1, 100),
    ("camera_server", "idle_timeout_seconds", 5, 3600),
    ("lane", "barrier_channel", 0, 3),
]


def _with(section: str, key: str, value: Any) -> tuple[dict[str, Any], str]:
    if section == "lane":
        return {"lane": [lane(**{key: value})]}, f"lane[1].{key}"
    if key == "max_body_bytes":
        # The memory budget for bodies must hold two of the largest.
        return {section: {key: value, "body_memory_budget_bytes": 1 << 27}}, f"{section}.{key}"
    return {section: {key: value}}, f"{section}.{key}"


@pytest.mark.parametrize(("section", "key", "low", "high"), INTEGER_KEYS)
@given(data=st.data())
def test_integers_outside_the_range_are_rejected_with_the_range(
    section: str, key: str, low: int, high: int, data: st.DataObject
) -> None:
    value = data.draw(st.one_of(st.integers(max_value=low - 1), st.integers(min_value=high + 1)))
    document, path = _with(section, key, value)
    error = error_of(document)
    assert (error.path, error.reason) == (path, f"must be between {low} and {high}, got {value}")


@pytest.mark.parametrize(("section", "key", "low", "high"), INTEGER_KEYS)
@given(data=st.data())
def test_integers_inside_the_range_are_kept(
    section: str, key: str, low: int, high: int, data: st.DataObject
) -> None:
    value = data.draw(st.integers(min_value=low, max_value=high))
    document, _ = _with(section, key, value)
    config = parse_config(document)
    stored = config.lanes[0].barrier_channel if section == "lane" else getattr(config.camera_server, key)
    assert stored == value and type(stored) is int


@pytest.mark.parametrize(("section", "key", "low", "high"), INTEGER_KEYS)
@given(value=st.one_of(st.booleans(), st.floats(), st.text(), st.lists(st.integers(), max_size=2)))
def test_non_integers_are_rejected_as_such(
    section: str, key: str, low: int, high: int, value: Any
) -> None:
    document, path = _with(section, key, value)
    error = error_of(document)
    assert error.path == path
    assert error.reason.startswith("must be an integer, got ")


@given(value=st.floats(allow_nan=True, allow_infinity=True) | st.integers())
def test_comet_hold_accepts_exactly_1_to_28(value: float) -> None:
    document = {"camera_server": {"comet_hold_seconds": value}}
    if 1 <= value <= 28:
        assert parse_config(document).camera_server.comet_hold_seconds == float(value)
    else:
        error = error_of(document)
        assert error.path == "camera_server.comet_hold_seconds"
        assert error.reason.startswith("must be between 1 and 28, got ")


@given(
    name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20).filter(
        lambda name: name not in {"listen", "comet_hold_seconds", "max_body_bytes", "offline_missed_intervals", "idle_timeout_seconds"}
    )
)
def test_any_unknown_camera_server_key_is_rejected(name: str) -> None:
    error = error_of({"camera_server": {name: 1}})
    assert error.path == f"camera_server.{name}"
    assert error.reason.startswith("unknown key (known: ")


@given(
    serial=st.text(alphabet="abcdefABCDEF0123456789-", min_size=1, max_size=20),
    data=st.data(),
)
def test_lane_for_camera_ignores_case(serial: str, data: st.DataObject) -> None:
    config = parse_config({"lane": [lane(camera=serial)]})
    asked = "".join(data.draw(st.sampled_from([c.lower(), c.upper()])) for c in serial)
    found = config.lanes.for_camera(asked)
    assert found is not None and found.camera == serial


# ---------------------------------------------------------------- the checker


def test_check_config_accepts_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(REFERENCE)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"ok: {REFERENCE}: 2 lanes (Entrance, Exit); cameras on tcp:8080; ")
    assert "admin on tcp:8081:interface=127.0.0.1" in out
    assert err == ""


def test_check_config_without_a_path_checks_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("ok: <built-in defaults>: no lanes; cameras on tcp:8080; ")


def test_check_config_reports_the_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "site.toml"
    config_file.write_text("[camera_server]\ncomet_hold_seconds = 40\n")
    assert main([str(config_file)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: {config_file}: camera_server.comet_hold_seconds: must be between 1 and 28, got 40\n"


def test_check_config_reports_a_syntax_error_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "site.toml"
    config_file.write_text("[camera_server\n")
    assert main([str(config_file)]) == 2
    _, err = capsys.readouterr()
    assert err.startswith(f"error: {config_file}: invalid TOML at line 1, column ")
    assert err.count(str(config_file)) == 1


def test_check_config_reports_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope.toml")]) == 2
    _, err = capsys.readouterr()
    assert err == f"error: {tmp_path / 'nope.toml'}: cannot read: No such file or directory\n"


def test_gateway_config_is_built_only_from_valid_parts() -> None:
    config = parse_config({"lane": [lane()]}, source="site.toml")
    assert isinstance(config, GatewayConfig)
    assert config.source == "site.toml"
    assert config.lanes.for_camera("d85b1269-8f942256") == config.lanes[0]


def test_whitelist_csv_must_exist_and_is_made_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        parse_config({"policy": {"whitelist_csv": "etc/whitelist.csv"}})
    assert info.value.path == "policy.whitelist_csv"
    assert info.value.reason == f"no such file: {tmp_path / 'etc' / 'whitelist.csv'}"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "whitelist.csv").write_text("plate\n", encoding="utf-8")
    config = parse_config({"policy": {"whitelist_csv": "etc/whitelist.csv"}})
    assert config.policy.whitelist_csv == str(tmp_path / "etc" / "whitelist.csv")


@pytest.mark.parametrize(
    "section, key, value, reason",
    [
        ("policy", "max_plate_distance", 2, "must be between 0 and 1, got 2"),
        ("policy", "duplicate_window_seconds", -1, "must be between 0 and 300, got -1"),
        ("store", "image_retention_days", 0, "must be between 1 and 3650, got 0"),
        ("store", "image_max_bytes", 1024, "must be between 16777216 and 1099511627776, got 1024"),
    ],
)
def test_store_and_policy_ranges(section: str, key: str, value: object, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({section: {key: value}})
    assert str(info.value) == f"{section}.{key}: {reason}"


def test_lane_sync_whitelist_is_a_boolean() -> None:
    lane = {"name": "Entrance", "camera": "d85b1269-8f942256"}
    assert parse_config({"lane": [lane]}).lanes[0].sync_whitelist is True
    off = parse_config({"lane": [{**lane, "sync_whitelist": False}]})
    assert off.lanes[0].sync_whitelist is False
    with pytest.raises(ConfigError) as info:
        parse_config({"lane": [{**lane, "sync_whitelist": "no"}]})
    assert str(info.value) == 'lane[1].sync_whitelist: must be true or false, got "no"'


@pytest.mark.parametrize(
    "data, path, reason",
    [
        ({"occupancy": {"capacity": -1}}, "occupancy.capacity", "must be between 0 and 1000000, got -1"),
        (
            {"lane": [lane()], "occupancy": {"lanes": ["Entrance", "Side gate"]}},
            "occupancy.lanes[2]",
            'no lane is called "Side gate" (lanes: Entrance)',
        ),
        (
            {"lane": [lane()], "occupancy": {"areas": [{"name": "Staff", "lanes": ["Back"]}]}},
            "occupancy.areas[1].lanes[1]",
            'no lane is called "Back" (lanes: Entrance)',
        ),
        (
            {"lane": [lane()], "occupancy": {"areas": [{"name": "Staff", "lanes": []}]}},
            "occupancy.areas[1].lanes",
            "must list at least 1 lane, got an empty array",
        ),
        ({"admin": {"attention": {"refused": "siren"}}}, "admin.attention.refused", "must be one of"),
    ],
)
def test_occupancy_and_attention_errors_name_the_key(data: dict[str, Any], path: str, reason: str) -> None:
    error = error_of(data)
    assert error.path == path
    assert error.reason.startswith(reason), error.reason


def test_occupancy_lanes_take_the_configured_spelling() -> None:
    config = parse_config(
        {
            "lane": [lane(), lane(name="Exit", camera="Q", direction="out")],
            "occupancy": {
                "capacity": 80,
                "areas": [{"name": "Staff", "lanes": ["entrance", "EXIT"], "capacity": 10}],
            },
        }
    )
    assert config.occupancy.capacity == 80
    assert config.occupancy.lanes is None
    assert config.occupancy.areas[0].lanes == ("Entrance", "Exit")
    assert config.admin.attention.to_json() == {
        "blacklist": "alarm",
        "refused": "chime",
        "camera_offline": "beep",
        "display_fault": "beep",
        "cloud_down": "beep",
    }


def _lane_with(**tables: Any) -> dict[str, Any]:
    return {"name": "Entrance", "camera": "d85b1269-8f942256", **tables}


@pytest.mark.parametrize(
    "data, path, reason",
    [
        (
            {"lane": [_lane_with(display={"via": "serial"})]},
            "lane[1].display.port",
            'a display reached via "serial" needs a port',
        ),
        (
            {"lane": [_lane_with(display={"via": "camera", "port": "led1"})]},
            "lane[1].display.port",
            'a display reached via "camera" takes no port',
        ),
        (
            {"lane": [_lane_with(display={"via": "serial", "port": "led9"})],
             "serial": {"led1": {"device": "/dev/ttyUSB0"}}},
            "lane[1].display.port",
            "no [serial.led9] section (ports: led1)",
        ),
        (
            {"lane": [_lane_with(display={"via": "serial", "port": "led1"},
                                 serial_bridge={"to_port": "led1"})],
             "serial": {"led1": {"device": "/dev/ttyUSB0"}}},
            "lane[1].serial_bridge.to_port",
            'port "led1" is already used by the display of lane "Entrance"',
        ),
        (
            {"serial": {"a": {"device": "/dev/ttyUSB0"}, "b": {"device": "/dev/ttyUSB0"}}},
            "serial.b.device",
            '"/dev/ttyUSB0" is already the device of [serial.a]',
        ),
        (
            {"serial": {"a": {"device": "/dev/ttyUSB0", "stopbits": 3}}},
            "serial.a.stopbits",
            "must be between 1 and 2, got 3",
        ),
        (
            {"lane": [_lane_with(display={"messages": {"welcome": {"voice": "hi"}}})]},
            "lane[1].display.messages.welcome",
            "unknown key",
        ),
        (
            {"lane": [_lane_with(display={"messages": {"open": {"lines": ["{plat}"]}}})]},
            "lane[1].display.messages.open.lines[1]",
            "plat",
        ),
        (
            {"lane": [_lane_with(display={"idle": {"colour": "red"}})]},
            "lane[1].display.idle.colour",
            "RRGGBB",
        ),
    ],
)
def test_display_and_serial_errors_name_the_key(data: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.path == path
    assert reason in info.value.reason


def test_serial_ports_and_bridge_parse() -> None:
    config = parse_config(
        {
            "lane": [_lane_with(display={"via": "serial", "port": "led1", "address": 3},
                                serial_bridge={"to_port": "ticket", "camera_channel": 1})],
            "serial": {"led1": {"device": "/dev/ttyUSB0", "baudrate": 19200, "stopbits": 2},
                       "ticket": {"device": "/dev/ttyUSB1"}},
        }
    )
    led = config.serial_port("led1")
    assert led is not None and (led.baudrate, led.stopbits, led.gap_ms) == (19200, 2.0, 50)
    lane = config.lanes[0]
    assert lane.display is not None and (lane.display.port, lane.display.address) == ("led1", 3)
    assert lane.serial_bridge is not None and lane.serial_bridge.camera_channel == 1


def test_camera_identity_and_connection_keys() -> None:
    config = parse_config(
        {"camera_server": {"allowed_cameras": ["d85b1269-8f942256"],
                           "allowed_networks": ["192.168.10.7/24", "fd00::1/8"]}}
    )
    assert config.camera_server.allowed_networks == ("192.168.10.0/24", "fd00::/8")
    with pytest.raises(ConfigError) as info:
        parse_config({"camera_server": {"allowed_networks": ["192.168.300.0/24"]}})
    assert info.value.path == "camera_server.allowed_networks[1]"
    assert "192.168.300.0/24" in info.value.reason
    with pytest.raises(ConfigError) as info:
        parse_config({"camera_server": {"max_connections_per_address": 1}})
    assert str(info.value) == "camera_server.max_connections_per_address: must be between 2 and 10000, got 1"


def test_upstream_section_is_optional_and_checked() -> None:
    assert parse_config({}).upstream is None
    config = parse_config(
        {"gateway": {"id": "site-7"},
         "upstream": {"url": "https://cloud.example.com/anpr/",
                      "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}
    )
    assert config.upstream is not None
    assert (config.upstream.url, config.upstream.gateway_id) == ("https://cloud.example.com/anpr", "site-7")
    with pytest.raises(ConfigError) as info:
        parse_config({"upstream": {"url": "https://cloud.example.com", "secret": "not-a-secret"}})
    assert info.value.path == "upstream.secret"
    assert "not-a-secret" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config({"upstream": {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})
    assert str(info.value) == "upstream.url: missing required key"


def test_admin_users_and_tokens_are_checked() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"admin": {"users": [{"name": "booth", "password_hash": "x", "role": "boss"}]}})
    assert info.value.path.startswith("admin.users[1]")


def test_a_lane_address_is_a_network() -> None:
    (lane_,) = parse_config({"lane": [lane(address="192.168.1.64")]}).lanes
    assert lane_.address == "192.168.1.64/32"
    error = error_of({"lane": [lane(address="gate-1")]})
    assert (error.path, error.reason) == ("lane[1].address", 'must be a network such as "192.168.1.0/24", got "gate-1"')
