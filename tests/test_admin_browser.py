"""The admin page in a real browser (headless Chromium driven by Playwright),
on the real gateway and a simulated camera, all on loopback.

What an operator does every day is checked end to end: sign in, see a plate
arrive live with its images, open the barrier (the simulated camera pulses
its relay), take a snapshot, send a display test, put the plate on the
whitelist and see the next read open the barrier, search the events, read
the status, switch the language; and what must not happen does not: a
viewer has no buttons, a note holding markup stays text, an ended session
goes back to the sign-in form, repeated wrong passwords lock the address out.

The browser runs on a worker thread (Playwright's API blocks); the gateway
and the camera stay on the reactor, reached from the browser thread with
``blockingCallFromThread``. Every wait is bounded.

Screenshots of each view are taken on every run; with
``ANPR_DOC_SCREENSHOTS=1`` they are written to ``docs/images/`` (the
product documentation), otherwise to the test's scratch directory.

Skipped only when Chromium is not installed at ``/usr/bin/chromium``
(Debian's ``chromium`` package).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    FilePayload,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.trial.unittest import SkipTest

import gateway.store.service as store_service
from gateway import __version__
from gateway.admin.settings import hash_password, token_digest
from gateway.config import parse_config
from gateway.protocol.board import ShowLines, decode_frame, split_frames
from gateway.simulator.camera import SimulatedCamera
from gateway.simulator.config import CameraConfig
from gateway.tap import build_service
from support import REPO, RunningGateway, loopback_config, start_gateway
from support.gateway import GatewayTestCase
from support.serial import PtyBoard
from support.threads import global_reactor

pytestmark = pytest.mark.system

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ENTRANCE = "d85b1269-8f942256"
EXIT = "QFX2182310150262"
PLATE = "京A12345"
DOC_IMAGES = REPO / "docs" / "images"
# Playwright waits (milliseconds): generous for a loaded 2-core machine, but bounded.
WAIT_MS = 15_000
DESKTOP = ViewportSize(width=1280, height=860)
PHONE = ViewportSize(width=390, height=844)
# What a site's spreadsheet holds; line 4 has an impossible date.
PLATES_CSV = """plate,valid_until,lanes,note
沪B8K7Z2,2030-06-30,Entrance,Visitor
粤BD12345,,,"Fleet van, night shift"
浙C5T789,2025-13-45,,Bad date
苏E99999,,Exit,
"""


LANES = [
    {"name": "Entrance", "camera": ENTRANCE, "barrier_channel": 1},
    # A lane whose camera never speaks: shown offline, its buttons greyed.
    {"name": "Exit", "camera": EXIT, "direction": "out"},
]


class AdminBrowserTestCase(GatewayTestCase):
    """A gateway with its admin listener, a simulated lane camera, and a way
    for a browser session on a worker thread to reach them."""

    config = loopback_config(
        gateway={"id": "north-car-park", "timezone": "Asia/Shanghai"},
        # Every read is decided afresh (no repeat suppression between the
        # test's two reads of the same plate).
        policy={"duplicate_window_seconds": 0},
        lane=LANES,
    )

    def setUp(self) -> None:
        if not os.path.exists(CHROMIUM):
            raise SkipTest(
                f"Chromium is not installed at {CHROMIUM}: install Debian's chromium "
                "package (apt-get install chromium) to run the admin page browser tests"
            )
        expect.set_options(timeout=WAIT_MS)
        self.page_errors: list[str] = []
        self.scratch = self.mktemp()

    # -- the gateway side (reactor thread) -------------------------------------

    async def until(self, condition: Callable[[], Any], seconds: float = 15.0, what: str = "") -> None:
        for _ in range(int(seconds / 0.05)):
            if condition():
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail(f"timed out waiting for {what or condition}")

    async def start_site(self) -> tuple[RunningGateway, str]:
        """The gateway and the password of the ``admin`` user it created on
        its first start (as an installer reads it)."""
        gateway = await self.start()
        self.assertTrue(gateway.admin_ports, "the gateway has no admin listener")
        password_file = Path(gateway.service.config.gateway.state_dir) / "initial-admin-password"
        await self.until(password_file.exists, what="the initial admin password")
        password = password_file.read_text(encoding="ascii").strip()
        return gateway, password

    def camera(self, **settings: Any) -> SimulatedCamera:
        settings.setdefault("serialno", ENTRANCE)
        settings.setdefault("servers", (f"http://127.0.0.1:{self.gateway.camera_port}",))
        settings.setdefault("heartbeat", "comet")
        settings.setdefault("images", "both")
        settings.setdefault("no_plate_rate", 0.0)
        camera = SimulatedCamera(reactor, CameraConfig(**settings))
        camera.start()
        self.addCleanup(camera.stop)
        return camera

    async def add_user(self, name: str, password: str, role: str) -> None:
        """Another page user, kept in the store as the gateway keeps its own."""
        accounts: Any = self.gateway.service.getServiceNamed("admin-accounts")
        encoded = await deferToThread(hash_password, password)
        store = self.gateway.service.store.store
        assert store is not None
        users = json.loads(await store.kv_get("admin:users") or "[]")
        users.append({"name": name, "password_hash": encoded, "role": role})
        await store.kv_set("admin:users", json.dumps(users))
        await accounts.load()

    # -- the browser side (worker thread) --------------------------------------

    def in_browser(
        self, session: Callable[[Browser], None], *, args: tuple[str, ...] = ()
    ) -> Deferred[None]:
        """Run ``session(browser)`` on a worker thread with a fresh headless
        Chromium (with ``args`` besides the usual ones); the reactor keeps
        serving meanwhile."""

        def run() -> None:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *args]
                )
                try:
                    session(browser)
                finally:
                    browser.close()

        return deferToThread(run)

    def on_reactor(self, function: Callable[..., Any], *args: Any) -> Any:
        """Call ``function`` on the reactor thread from the browser thread
        (waiting for it when it returns a Deferred or a coroutine)."""

        def call() -> Any:
            result = function(*args)
            if hasattr(result, "__await__"):
                return ensureDeferred(result)
            return result

        return blockingCallFromThread(cast(Any, reactor), call)

    def wait_on_reactor(self, condition: Callable[[], Any], what: str, seconds: float = 15.0) -> Any:
        """Poll ``condition`` on the reactor from the browser thread until it
        is true (bounded)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.on_reactor(condition)
            if value:
                return value
            time.sleep(0.05)
        self.fail(f"timed out waiting for {what}")

    def new_page(
        self, browser: Browser, *, locale: str = "en-GB", viewport: ViewportSize = DESKTOP, **options: Any
    ) -> tuple[BrowserContext, Page]:
        options.setdefault("timezone_id", "Asia/Shanghai")
        context = browser.new_context(viewport=viewport, locale=locale, **options)
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        return context, page

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.gateway.admin_port}{path}"

    def screenshot(self, page: Page, name: str) -> None:
        """A screenshot for the documentation (see the module docstring)."""
        if os.environ.get("ANPR_DOC_SCREENSHOTS"):
            folder = DOC_IMAGES
        else:
            folder = Path(self.scratch)
        folder.mkdir(parents=True, exist_ok=True)
        # Toasts come and go: keep them out of the pictures.
        page.evaluate("() => document.querySelectorAll('.toast').forEach((t) => t.remove())")
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), animations="disabled")
        self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")

    def sign_in(self, page: Page, user: str, password: str) -> None:
        page.fill("#login-username", user)
        page.fill("#login-password", password)
        page.click("#login-submit")
        expect(page.locator("#app")).to_be_visible()

    def image_loaded(self, page: Page, selector: str) -> None:
        """The image at ``selector`` was fetched and decoded."""
        page.wait_for_function(
            "(s) => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }",
            arg=selector,
            timeout=WAIT_MS,
        )

    def no_page_errors(self) -> None:
        self.assertEqual(self.page_errors, [], "JavaScript errors on the page")


class OperatorTests(AdminBrowserTestCase):
    async def test_a_day_at_the_booth(self) -> None:
        gateway, password = await self.start_site()
        camera = self.camera()
        await self.until(lambda: gateway.service.registry.held_polls() == 1, what="a held comet poll")
        await self.in_browser(lambda browser: self.booth(browser, camera, password))
        self.no_page_errors()

    def booth(self, browser: Browser, camera: SimulatedCamera, password: str) -> None:
        context, page = self.new_page(browser)
        page.goto(self.url())

        # Signing in: a wrong password is refused with a clear message.
        expect(page.locator("#login-form")).to_be_visible()
        expect(page.locator("#login-form h1")).to_have_text("ANPR gateway")
        self.screenshot(page, "login")
        page.fill("#login-username", "admin")
        page.fill("#login-password", "not-the-password")
        page.click("#login-submit")
        expect(page.locator("#login-message")).to_have_text("Wrong user name or password.")
        self.sign_in(page, "admin", password)
        expect(page.locator("#user-label")).to_contain_text("admin")
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live")

        # The lanes: the entrance camera is online, the exit camera never spoke.
        entrance = page.locator(f'.lane-card[data-camera="{ENTRANCE}"]')
        exit_lane = page.locator(f'.lane-card[data-camera="{EXIT}"]')
        expect(entrance).to_have_class(re.compile(r"\bis-online\b"))
        expect(entrance.locator(".lane-name")).to_have_text("Entrance")
        expect(exit_lane).to_have_class(re.compile(r"\bis-offline\b"))
        expect(exit_lane.locator(".online-text")).to_have_text("Offline")
        expect(exit_lane.locator('[data-action="open"]')).to_be_disabled()

        # A car arrives: its plate shows up live, with both images.
        self.on_reactor(camera.read_plate, PLATE)
        expect(entrance.locator(".lane-plate .plate")).to_have_text(PLATE)
        expect(entrance.locator(".decision-band")).to_have_class(re.compile(r"\bband-denied\b"))
        expect(entrance.locator(".band-reason")).to_have_text("unknown plate")
        self.image_loaded(page, f'.lane-card[data-camera="{ENTRANCE}"] .crop-image')
        self.image_loaded(page, f'.lane-card[data-camera="{ENTRANCE}"] .full-image')
        expect(page.locator("#live-list .live-item")).to_have_count(1)
        expect(page.locator("#live-list .live-item .plate")).to_have_text(PLATE)

        # The full image enlarges on a click.
        entrance.locator(".full-button").click()
        expect(page.locator("#image-dialog")).to_be_visible()
        self.image_loaded(page, "#image-large")
        page.click("#image-close")
        expect(page.locator("#image-dialog")).to_be_hidden()

        # Open the barrier: nothing happens until the operator says why.
        entrance.locator('[data-action="open"]').click()
        dialog = page.locator("#form-dialog")
        expect(dialog).to_be_visible()
        expect(dialog.locator(".dialog-text")).to_contain_text("Entrance")
        page.click("#form-dialog-cancel")
        expect(dialog).to_be_hidden()
        self.assertEqual(self.on_reactor(lambda: len(camera.relay_pulses)), 0)
        entrance.locator('[data-action="open"]').click()
        page.click("#form-dialog-ok")
        expect(dialog.locator('[data-error-for="reason"]')).to_have_text("required")
        self.assertEqual(self.on_reactor(lambda: len(camera.relay_pulses)), 0)
        dialog.locator("select[name=reason]").select_option("delivery")
        dialog.locator("input[name=note]").fill("Parcel van at the gate")
        page.click("#form-dialog-ok")
        expect(dialog).to_be_hidden()
        pulses = self.wait_on_reactor(lambda: list(camera.relay_pulses), "the barrier relay")
        self.assertEqual([(p.channel, p.source) for p in pulses], [(1, "comet")])
        expect(entrance.locator(".lane-command")).to_have_text("Open barrier: delivered")
        # The open is an event of its own, naming who opened and why.
        opens = self.wait_on_reactor(
            lambda: self.gateway.store.recent_events(limit=5, type="operator_open"), "the open's event"
        )
        self.assertEqual(
            [(e.raw["operator"]["name"], e.raw["reason"], e.raw["note"]) for e in opens],
            [("admin", "delivery", "Parcel van at the gate")],
        )

        # A snapshot: the camera's picture, shown at once.
        entrance.locator('[data-action="snapshot"]').click()
        expect(page.locator("#image-title")).to_have_text("Snapshot: Entrance")
        self.image_loaded(page, "#image-large")
        expect(page.locator("#image-save")).to_be_visible()
        self.assertEqual(self.on_reactor(lambda: camera.snapshots_requested), 1)
        page.click("#image-close")

        # A display test: the lane has no display, so the camera says it.
        entrance.locator('[data-action="display"]').click()
        page.fill("#display-text", "欢迎光临 TEST")
        page.locator("#display-dialog button[value=ok]").click()
        voices = self.wait_on_reactor(lambda: [v.text for v in camera.voices], "the camera's voice")
        self.assertEqual(voices, ["欢迎光临 TEST"])

        # The whitelist: a wrong field is pointed at, then the plate is added.
        page.click('.tab[data-view="whitelist"]')
        expect(page.locator("#whitelist-range")).to_have_text("0 plates")
        page.click("#whitelist-add")
        form = page.locator("#entry-form")
        form.locator("[name=plate]").fill(PLATE)
        form.locator("[name=hours]").fill("weekdays please")
        form.locator("[name=note]").fill("Site manager, space 12")
        form.locator("input[name=lanes][value=Entrance]").check()
        form.locator("[name=valid_until_date]").fill("2099-12-31")
        form.locator("button[type=submit]").click()
        expect(form.locator('[data-error-for="hours"]')).to_contain_text("weekly window")
        expect(form.locator('[data-error-for="plate"]')).to_be_hidden()
        form.locator("[name=hours]").fill("Mon-Sun 00:00-00:00")
        form.locator("button[type=submit]").click()
        expect(page.locator("#entry-dialog")).to_be_hidden()
        row = page.locator(f'#whitelist-rows tr[data-plate="{PLATE}"]')
        expect(row).to_be_visible()
        expect(row.locator(".note")).to_have_text("Site manager, space 12")
        expect(row).to_contain_text("2099-12-31")
        expect(row).to_contain_text("Entrance")

        # A spreadsheet's rows: the good ones are kept, the bad one is named by line.
        page.set_input_files(
            "#whitelist-file",
            files=[FilePayload(name="plates.csv", mimeType="text/csv", buffer=PLATES_CSV.encode("utf-8"))],
        )
        expect(page.locator("#import-summary")).to_have_text("3 rows imported · 1 row rejected")
        rejected = page.locator("#import-rows tr")
        expect(rejected).to_have_count(1)
        expect(rejected.locator("td").nth(0)).to_have_text("4")
        expect(rejected.locator("td").nth(1)).to_have_text("valid_until")
        expect(page.locator("#whitelist-rows tr")).to_have_count(4)
        expect(page.locator("#whitelist-range")).to_have_text("4 plates")
        self.screenshot(page, "whitelist")
        page.fill("#whitelist-q", "BD")
        expect(page.locator("#whitelist-rows tr")).to_have_count(1)
        expect(page.locator("#whitelist-rows tr .note")).to_have_text("Fleet van, night shift")
        page.fill("#whitelist-q", "")
        expect(page.locator("#whitelist-rows tr")).to_have_count(4)
        with page.expect_download() as download:
            page.click("#whitelist-export")
        exported = Path(download.value.path()).read_text(encoding="utf-8-sig")
        self.assertIn(PLATE, exported)
        self.assertIn("粤BD12345", exported)

        # Editing keeps what is not changed; deleting asks first.
        visitor = page.locator('#whitelist-rows tr[data-plate="沪B8K7Z2"]')
        visitor.locator('[data-action="edit"]').click()
        expect(form.locator("[name=plate]")).to_have_value("沪B8K7Z2")
        expect(form.locator("[name=valid_until_date]")).to_have_value("2030-06-30")
        expect(form.locator("[name=valid_until_time]")).to_have_value("")
        expect(form.locator("input[name=lanes][value=Entrance]")).to_be_checked()
        form.locator("[name=enabled]").uncheck()
        form.locator("button[type=submit]").click()
        expect(visitor).to_have_class(re.compile(r"\bis-disabled\b"))
        expect(visitor).to_contain_text("2030-06-30")
        van = page.locator('#whitelist-rows tr[data-plate="粤BD12345"]')
        van.locator('[data-action="delete"]').click()
        expect(page.locator("#confirm-text")).to_contain_text("粤BD12345")
        page.click("#confirm-ok")
        expect(van).to_have_count(0)
        expect(page.locator("#whitelist-range")).to_have_text("3 plates")

        # The next read of that plate opens the barrier by itself.
        page.click('.tab[data-view="lanes"]')
        self.on_reactor(camera.read_plate, PLATE)
        expect(entrance.locator(".decision-band")).to_have_class(re.compile(r"\bband-open\b"))
        expect(entrance.locator(".band-reason")).to_have_text("whitelisted")
        expect(page.locator("#live-list .live-item")).to_have_count(2)
        pulses = self.wait_on_reactor(
            lambda: [p for p in camera.relay_pulses if p.source == "plate"], "the plate's relay pulse"
        )
        self.assertEqual([(p.channel, p.plate) for p in pulses], [(1, PLATE)])
        self.screenshot(page, "lanes")

        # Events: the two reads, newest first; details with the full image.
        page.click('.tab[data-view="events"]')
        page.fill("#events-form [name=plate]", "A12345")
        page.locator("#events-form button[type=submit]").click()
        rows = page.locator("#events-rows tr")
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_have_class(re.compile(r"\bis-open\b"))
        expect(rows.nth(1)).to_have_class(re.compile(r"\bis-denied\b"))
        page.select_option("#events-form [name=open]", "false")
        page.locator("#events-form button[type=submit]").click()
        expect(rows).to_have_count(1)
        page.select_option("#events-form [name=open]", "")
        page.locator("#events-form button[type=submit]").click()
        expect(rows).to_have_count(2)
        self.image_loaded(page, "#events-rows tr:first-child img.thumb")
        self.screenshot(page, "events")
        rows.nth(0).click()
        expect(page.locator("#event-dialog")).to_be_visible()
        expect(page.locator("#event-body .event-reason")).to_have_text("whitelisted")
        self.image_loaded(page, "#event-body .event-image-full img")
        page.click("#event-close")

        # Status: the version, the cameras, no cloud configured.
        page.click('.tab[data-view="status"]')
        cards = page.locator("#status-cards")
        # Shown (and fetched in the same step), then fetched: now, not at sign-in.
        expect(page.locator("#view-status")).to_be_visible()
        expect(cards).to_have_attribute("aria-busy", "false")
        expect(cards).to_contain_text(__version__)
        expect(cards).to_contain_text("1 of 2 online")
        expect(cards.locator(".link-standalone")).to_have_text("Standalone")
        self.screenshot(page, "status")

        # Chinese, remembered across a reload.
        page.click('.tab[data-view="lanes"]')
        page.locator("#app .lang-switch").click()
        expect(page.locator('.tab[data-view="lanes"]')).to_have_text("车道")
        expect(entrance.locator(".band-word")).to_have_text("放行")
        self.assertEqual(page.evaluate("() => document.documentElement.lang"), "zh-CN")
        page.reload()
        expect(page.locator('.tab[data-view="lanes"]')).to_have_text("车道")
        expect(entrance.locator('[data-action="open"]')).to_have_text("开闸")
        self.screenshot(page, "lanes-zh")
        page.locator("#app .lang-switch").click()
        expect(page.locator('.tab[data-view="lanes"]')).to_have_text("Lanes")

        # On a phone: one column, nothing wider than the screen.
        phone_context, phone = self.new_page(
            browser, viewport=PHONE, is_mobile=True, has_touch=True, storage_state=context.storage_state()
        )
        phone.goto(self.url("/#lanes"))
        phone_entrance = phone.locator(f'.lane-card[data-camera="{ENTRANCE}"]')
        expect(phone_entrance.locator(".lane-plate .plate")).to_have_text(PLATE)
        self.image_loaded(phone, f'.lane-card[data-camera="{ENTRANCE}"] .full-image')
        self.assertLessEqual(phone.evaluate("() => document.documentElement.scrollWidth"), PHONE["width"])
        box = phone_entrance.locator('[data-action="open"]').bounding_box()
        assert box is not None
        self.assertGreaterEqual(box["height"], 48)  # a thumb can hit it
        self.screenshot(phone, "lanes-phone")
        phone_context.close()
        context.close()


class AccessTests(AdminBrowserTestCase):
    async def test_viewer_session_end_and_lockout(self) -> None:
        gateway, password = await self.start_site()
        await self.add_user("booth", "booth-screen-pass", "viewer")
        entry = {
            "plate": "沪B8K7Z2",
            "note": '<img src=x onerror="window.hacked=1">',
            "enabled": True,
            "blacklist": True,
        }
        await gateway.service.plate_list.when_loaded()
        await self.in_browser(lambda browser: self.access(browser, password, entry))
        self.no_page_errors()

    def access(self, browser: Browser, admin_password: str, entry: dict[str, Any]) -> None:
        # A browser that prefers Chinese gets Chinese.
        context, page = self.new_page(browser, locale="zh-CN")
        page.goto(self.url())
        expect(page.locator("#login-submit")).to_have_text("登录")

        # Both languages have every string, and the page uses no missing one.
        missing = page.evaluate(
            """() => {
                const en = Object.keys(ANPR_I18N.en), zh = Object.keys(ANPR_I18N.zh);
                const used = [];
                for (const name of ['i18n', 'i18nPlaceholder', 'i18nTitle', 'i18nAriaLabel']) {
                    const attribute = 'data-' + name.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
                    document.querySelectorAll('[' + attribute + ']').forEach((n) => used.push(n.dataset[name]));
                }
                return {
                    only_en: en.filter((k) => !zh.includes(k)),
                    only_zh: zh.filter((k) => !en.includes(k)),
                    unknown: used.filter((k) => !en.includes(k)),
                };
            }"""
        )
        self.assertEqual(missing, {"only_en": [], "only_zh": [], "unknown": []})

        # The admin adds a plate whose note is markup.
        self.sign_in(page, "admin", admin_password)
        csrf = page.evaluate(
            "async () => (await (await fetch('/api/session')).json()).csrf_token"
        )
        status = page.evaluate(
            """async ([entry, csrf]) => (await fetch('/api/whitelist', {
                method: 'POST', body: JSON.stringify(entry),
                headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}})).status""",
            [entry, csrf],
        )
        self.assertEqual(status, 201)
        page.click("#logout")
        expect(page.locator("#login-message")).to_have_text("已退出登录。")

        # The booth screen's viewer sees everything and can change nothing.
        self.sign_in(page, "booth", "booth-screen-pass")
        expect(page.locator("#user-label .role")).to_have_text("只读")
        expect(page.locator(".lane-card")).to_have_count(2)
        expect(page.locator(".lane-card [data-action]")).to_have_count(0)
        page.click('.tab[data-view="whitelist"]')
        row = page.locator('#whitelist-rows tr[data-plate="沪B8K7Z2"]')
        expect(row).to_be_visible()
        expect(row.locator(".note")).to_have_text(entry["note"])
        expect(row.locator("img")).to_have_count(0)
        expect(row.locator(".badge-denied")).to_have_text("黑名单")
        expect(page.locator("#whitelist-add")).to_be_hidden()
        expect(page.locator(".file-button")).to_be_hidden()
        expect(row.locator("[data-action]")).to_have_count(0)
        self.assertIsNone(page.evaluate("() => window.hacked"))

        # The session ends (the cookie is gone): the next request leads back
        # to the sign-in form, saying why.
        context.clear_cookies()
        page.click('.tab[data-view="events"]')
        expect(page.locator("#login-view")).to_be_visible()
        expect(page.locator("#login-message")).to_have_text("登录已过期，请重新登录。")

        # Wrong passwords, again and again: the address is locked out.
        for _ in range(6):
            page.fill("#login-username", "booth")
            page.fill("#login-password", "guess")
            page.click("#login-submit")
            expect(page.locator("#login-submit")).to_be_enabled()
            expect(page.locator("#login-message")).to_be_visible()
        expect(page.locator("#login-message")).to_contain_text("失败次数过多")
        expect(page.locator("#login-message")).to_contain_text("秒")
        context.close()


WALL_TOKEN = "booth-wall-screen-token-5f1c9e"


def free_port() -> int:
    """A loopback port nothing listens on now (the gateway must come back
    on the same ports after a restart)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RestartTests(AdminBrowserTestCase):
    """A restart of the gateway, with a signed-in booth PC and a wall screen
    watching: nobody is signed out; the wall screen says the gateway is
    unreachable and the lanes unknown while it is down, and comes back by
    itself."""

    async def test_a_restart_signs_nobody_out_and_the_wall_screen_recovers(self) -> None:
        camera_port, admin_port = free_port(), free_port()
        self.restart_config = loopback_config(
            gateway={"id": "north-car-park", "timezone": "Asia/Shanghai"},
            camera_server={"listen": [f"tcp:{camera_port}:interface=127.0.0.1"]},
            admin={
                "listen": [f"tcp:port={admin_port}:interface=127.0.0.1"],
                "tokens": [{"name": "wall", "sha256": token_digest(WALL_TOKEN), "role": "viewer"}],
            },
            lane=LANES,
        )
        self.state_dir = self.mktemp()
        await self.start_gateway()
        self.addCleanup(self.stop_gateway)
        password_file = Path(self.gateway.service.config.gateway.state_dir) / "initial-admin-password"
        await self.until(password_file.exists, what="the initial admin password")
        password = password_file.read_text(encoding="ascii").strip()
        camera = self.camera()
        await self.until(lambda: self.gateway.service.registry.held_polls() == 1, what="a held comet poll")
        await self.in_browser(lambda browser: self.restart(browser, camera, password))
        self.no_page_errors()

    async def start_gateway(self) -> None:
        self.gateway = await start_gateway(self.restart_config, self.state_dir)

    async def stop_gateway(self) -> None:
        """Stop the gateway as its process ends: the service tree stops, then
        every connection still open to its listeners is cut."""
        service = self.gateway.service
        if not service.running:
            return
        await self.gateway.stop()
        for child in service:
            factory: Any = getattr(child, "factory", None)
            for protocol in list(getattr(factory, "protocols", {})):
                if protocol.transport is not None:
                    protocol.transport.abortConnection()

    def restart(self, browser: Browser, camera: SimulatedCamera, password: str) -> None:
        booth_context, booth = self.new_page(browser)
        booth.goto(self.url())
        self.sign_in(booth, "admin", password)
        wall_context, wall = self.new_page(browser)
        wall.goto(self.url(f"/wall?token={WALL_TOKEN}"))
        # The token opened the page once and is gone from the address.
        expect(wall.locator("#app")).to_be_visible()
        self.assertNotIn(WALL_TOKEN, wall.url)
        expect(wall.locator("#user-label")).to_contain_text("wall")
        expect(wall.locator("#user-label .role")).to_have_text("viewer")
        for page in (booth, wall):
            expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
        wall_entrance = wall.locator(f'.lane-card[data-camera="{ENTRANCE}"]')
        expect(wall_entrance).to_have_class(re.compile(r"\bis-online\b"))
        expect(wall.locator("#unreachable-banner")).to_be_hidden()

        # The gateway stops (an upgrade, a power cut of the gateway alone).
        self.on_reactor(self.stop_gateway)
        expect(wall.locator("#live-state")).to_have_attribute("data-state", "reconnecting")
        expect(wall.locator("#live-text")).to_have_text("Gateway unreachable, reconnecting…")
        expect(wall.locator("#unreachable-banner")).to_be_visible()
        expect(wall_entrance).to_have_class(re.compile(r"\bis-unknown\b"))
        expect(wall_entrance.locator(".online-text")).to_have_text("Unknown")
        expect(wall.locator(".lane-card.is-online")).to_have_count(0)
        expect(booth.locator(f'.lane-card[data-camera="{ENTRANCE}"] [data-action="open"]')).to_be_disabled()
        self.screenshot(wall, "lanes-unreachable")

        # It comes back: both screens recover by themselves, still signed in.
        self.on_reactor(self.start_gateway)
        self.wait_on_reactor(
            lambda: self.gateway.service.registry.held_polls() == 1, "the camera back on its comet poll"
        )
        for page in (wall, booth):
            expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
            expect(page.locator("#app")).to_be_visible()
            expect(page.locator("#unreachable-banner")).to_be_hidden()
        expect(wall_entrance).to_have_class(re.compile(r"\bis-online\b"))
        expect(wall_entrance.locator(".online-text")).to_have_text("Online")

        # A reload finds the sign-in kept, and its CSRF token still works:
        # the barrier opens from the booth.
        booth.reload()
        expect(booth.locator("#app")).to_be_visible()
        expect(booth.locator("#user-label")).to_contain_text("admin")
        entrance = booth.locator(f'.lane-card[data-camera="{ENTRANCE}"]')
        expect(entrance).to_have_class(re.compile(r"\bis-online\b"))
        entrance.locator('[data-action="open"]').click()
        booth.locator("#form-dialog select[name=reason]").select_option("staff")
        booth.locator("#form-dialog input[name=note]").fill("after the restart")
        booth.click("#form-dialog-ok")
        pulses = self.wait_on_reactor(lambda: list(camera.relay_pulses), "the barrier relay")
        self.assertEqual([p.channel for p in pulses], [1])
        wall.reload()
        expect(wall.locator("#app")).to_be_visible()
        expect(wall.locator("#user-label")).to_contain_text("wall")
        wall_context.close()
        booth_context.close()


class UsersPageTests(AdminBrowserTestCase):
    async def test_a_user_made_on_the_page_signs_in(self) -> None:
        gateway, password = await self.start_site()
        await self.in_browser(lambda browser: self.users_page(browser, password))
        self.no_page_errors()

    def users_page(self, browser: Browser, admin_password: str) -> None:
        context, page = self.new_page(browser)
        page.goto(self.url())
        self.sign_in(page, "admin", admin_password)
        page.click('.tab[data-view="users"]')
        expect(page.locator('#users-rows tr[data-user="admin"]')).to_contain_text("gateway (made here)")

        # A new operator, with a reason; a short password is pointed at first.
        page.click("#user-add")
        form = page.locator("#form-dialog-form")
        form.locator("[name=name]").fill("bao")
        form.locator("[name=role]").select_option("operator")
        form.locator("[name=password]").fill("short")
        form.locator("[name=reason]").fill("night shift from Monday")
        page.click("#form-dialog-ok")
        expect(form.locator('[data-error-for="password"]')).to_contain_text("at least 10 characters")
        expect(page.locator("#form-dialog")).to_be_visible()
        form.locator("[name=password]").fill("night-shift-2041")
        page.click("#form-dialog-ok")
        expect(page.locator("#form-dialog")).to_be_hidden()
        row = page.locator('#users-rows tr[data-user="bao"]')
        expect(row).to_contain_text("operator")
        expect(row).to_contain_text("can sign in")
        audit = page.locator('#audit-rows tr[data-action="create_user"]')
        expect(audit).to_contain_text("bao")
        expect(audit.locator(".audit-reason")).to_have_text("night shift from Monday")
        expect(audit).to_contain_text("admin")

        # A token for a wall screen, shown once.
        page.click("#token-add")
        form.locator("[name=name]").fill("hall-wall")
        form.locator("[name=reason]").fill("screen in the hall")
        page.click("#form-dialog-ok")
        expect(page.locator("#token-shown")).to_be_visible()
        token = page.locator("#token-value").text_content() or ""
        self.assertGreaterEqual(len(token), 40)
        expect(page.locator('#tokens-rows tr[data-token="hall-wall"]')).to_contain_text("viewer")
        self.screenshot(page, "users")
        page.click("#token-hide")
        expect(page.locator("#token-shown")).to_be_hidden()

        # The new user signs in on another computer, and changes their password.
        other_context, other = self.new_page(browser)
        other.goto(self.url())
        self.sign_in(other, "bao", "night-shift-2041")
        expect(other.locator("#user-label")).to_contain_text("bao")
        expect(other.locator("#user-label .role")).to_have_text("operator")
        expect(other.locator('.tab[data-view="users"]')).to_be_hidden()
        other.click("#change-password")
        other_form = other.locator("#form-dialog-form")
        other_form.locator("[name=current_password]").fill("night-shift-2041")
        other_form.locator("[name=new_password]").fill("my-own-pass-2042")
        other.click("#form-dialog-ok")
        expect(other.locator("#form-dialog")).to_be_hidden()
        other.click("#logout")
        self.sign_in(other, "bao", "my-own-pass-2042")

        # Disabled by the admin: bao's page goes back to the sign-in form.
        page.locator('#users-rows tr[data-user="bao"] [data-action="disable"]').click()
        form.locator("[name=reason]").fill("left the company")
        page.click("#form-dialog-ok")
        expect(page.locator('#users-rows tr[data-user="bao"] .user-state')).to_have_text("disabled")
        other.click('.tab[data-view="events"]')
        expect(other.locator("#login-view")).to_be_visible()
        other.fill("#login-username", "bao")
        other.fill("#login-password", "my-own-pass-2042")
        other.click("#login-submit")
        expect(other.locator("#login-message")).to_have_text("Wrong user name or password.")
        other_context.close()
        context.close()


class StorageDamageTests(AdminBrowserTestCase):
    """What the page says when the store is damaged or cannot open: a
    replaced database in red on the status view until an admin acknowledges
    it, and on the sign-in page the reason the store cannot open, until it
    opens."""

    async def start_on(self, state_dir: Path) -> tuple[RunningGateway, str]:
        gateway = await start_gateway(self.config, str(state_dir))
        self.addCleanup(gateway.stop)
        self.gateway = gateway
        password_file = state_dir / "initial-admin-password"
        await self.until(password_file.exists, what="the initial admin password")
        return gateway, password_file.read_text(encoding="ascii").strip()

    async def test_a_replaced_database_is_red_until_acknowledged(self) -> None:
        state_dir = Path(self.mktemp())
        state_dir.mkdir(parents=True)
        (state_dir / "gateway.db").write_bytes(b"not a database, a failing card\n" * 400)
        gateway, password = await self.start_on(state_dir)
        replacement = gateway.store.replacement
        assert replacement is not None
        await self.in_browser(lambda browser: self.acknowledge(browser, password, replacement.moved_to))
        self.assertIsNone(gateway.store.replacement)
        self.no_page_errors()

    def acknowledge(self, browser: Browser, password: str, moved_to: str) -> None:
        context, page = self.new_page(browser)
        page.goto(self.url())
        self.sign_in(page, "admin", password)
        page.click('.tab[data-view="status"]')
        alert = page.locator("#status-cards .status-alert")
        expect(alert).to_contain_text("Database replaced")
        expect(alert).to_contain_text(moved_to)
        expect(alert).to_contain_text("cannot be read at all")
        expect(page.locator("#status-cards")).to_contain_text("Action needed")
        self.screenshot(page, "status-replaced")
        alert.locator('[data-action="acknowledge-replacement"]').click()
        expect(page.locator("#confirm-text")).to_contain_text(moved_to)
        page.click("#confirm-ok")
        expect(page.locator("#status-cards .status-alert")).to_have_count(0)
        expect(page.locator("#status-cards")).to_contain_text("Storage working")
        context.close()

    async def test_the_sign_in_page_says_why_the_store_cannot_open(self) -> None:
        # Tried again every half second here (10 s, doubling, in the field).
        self.patch(store_service, "OPEN_RETRY_FIRST", 0.5)
        self.patch(store_service, "OPEN_RETRY_MAX", 0.5)
        state_dir = Path(self.mktemp())
        # A directory where the database file should be: SQLite cannot open it.
        (state_dir / "gateway.db").mkdir(parents=True)
        data = {**self.config, "gateway": {**self.config["gateway"], "state_dir": str(state_dir)}}
        service = build_service(parse_config(data, source="<test>"), global_reactor)
        service.startService()
        self.addCleanup(service.stopService)
        await self.until(lambda: service.store.problem is not None, what="the store to fail")
        port = None
        for child in service:
            waiting = getattr(child, "_waitingForPort", None)
            if waiting is not None and child.name.startswith("admin"):
                port = (await waiting).getHost().port
        assert port is not None

        def unblock() -> None:
            (state_dir / "gateway.db").rmdir()

        await self.in_browser(lambda browser: self.sign_in_page(browser, port, unblock))
        self.no_page_errors()

    def sign_in_page(self, browser: Browser, port: int, unblock: Callable[[], None]) -> None:
        context, page = self.new_page(browser)
        page.goto(f"http://127.0.0.1:{port}/")
        message = page.locator("#login-message")
        expect(message).to_contain_text("The gateway cannot serve")
        expect(message).to_contain_text("the event store cannot open")
        expect(message).to_contain_text("gateway.db")
        self.on_reactor(unblock)
        # The page asks again by itself; once the store opens it offers the form.
        expect(message).to_be_hidden()
        expect(page.locator("#login-username")).to_be_visible()
        context.close()


BOOTH_SCREEN = ViewportSize(width=1366, height=768)
BOOTH_LANES = [
    {"name": f"Lane {n}", "camera": f"LANE00000000000{n}", "barrier_channel": 1,
     "direction": "in" if n % 2 else "out"}
    for n in range(1, 9)
]
BOOTH_PLATES = ["京A12345", "沪B8K7Z2", "粤BD12345", "苏E99999"]


class LayoutTests(AdminBrowserTestCase):
    """The booth's screen and a phone, measured: four lanes, each with a
    plate and both pictures, fit a 1366x768 screen without scrolling; eight
    still fit across and keep whole buttons; on a phone the live list comes
    first; every time is the site's, whatever the browser's own zone."""

    config = loopback_config(
        gateway={"id": "north-car-park", "timezone": "Asia/Shanghai"},
        policy={"duplicate_window_seconds": 0},
        lane=BOOTH_LANES[:4],
    )

    async def test_four_lanes_on_a_booth_screen_and_the_live_list_first_on_a_phone(self) -> None:
        gateway, password = await self.start_site()
        cameras = [self.camera(serialno=lane["camera"]) for lane in BOOTH_LANES[:4]]
        await self.until(lambda: gateway.service.registry.held_polls() == 4, what="four comet polls")
        for camera, plate in zip(cameras, BOOTH_PLATES, strict=True):
            camera.read_plate(plate)
        await self.in_browser(lambda browser: self.layout(browser, password))
        self.no_page_errors()

    def layout(self, browser: Browser, password: str) -> None:
        # A browser set to New York: the page still shows Shanghai's times.
        context, page = self.new_page(browser, viewport=BOOTH_SCREEN, timezone_id="America/New_York")
        page.goto(self.url())
        self.sign_in(page, "admin", password)
        cards = page.locator(".lane-card")
        expect(cards).to_have_count(4)
        for plate in BOOTH_PLATES:
            expect(page.locator(".lane-card .lane-plate .plate", has_text=plate)).to_have_count(1)
        for n in range(4):
            self.image_loaded(page, f'.lane-card[data-camera="{BOOTH_LANES[n]["camera"]}"] .full-image')
        self.screenshot(page, "lanes-four")
        # Nothing scrolls, and every card is whole on the screen.
        sizes = page.evaluate(
            "() => [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
        )
        self.assertLessEqual(sizes[0], BOOTH_SCREEN["width"])
        self.assertLessEqual(sizes[1], BOOTH_SCREEN["height"])
        for n in range(4):
            box = cards.nth(n).bounding_box()
            assert box is not None
            self.assertGreaterEqual(box["y"], 0)
            self.assertLessEqual(box["y"] + box["height"], BOOTH_SCREEN["height"], f"card {n + 1}")
            self.assertGreaterEqual(box["width"], 300)
            button = cards.nth(n).locator('[data-action="open"]').bounding_box()
            assert button is not None
            self.assertGreaterEqual(button["height"], 44)
        live = page.locator(".live-panel").bounding_box()
        assert live is not None
        self.assertLessEqual(live["x"] + live["width"], BOOTH_SCREEN["width"])

        # The times are Shanghai's: the lane card's clock and the event list.
        events = self.on_reactor(lambda: self.gateway.store.recent_events(limit=10, type="plate"))
        self.assertEqual(len(events), 4)
        shanghai = ZoneInfo("Asia/Shanghai")
        for event in events:
            card = page.locator(f'.lane-card[data-camera="{event.camera}"]')
            expect(card.locator(".lane-time strong")).to_have_text(
                event.received_at.astimezone(shanghai).strftime("%H:%M:%S")
            )
        page.click('.tab[data-view="events"]')
        newest = events[0]
        expect(page.locator("#events-rows tr").first).to_contain_text(
            newest.received_at.astimezone(shanghai).strftime("%Y-%m-%d %H:%M:%S")
        )

        # On a phone: the live list first, then the lanes.
        phone_context, phone = self.new_page(
            browser, viewport=PHONE, is_mobile=True, has_touch=True,
            timezone_id="America/New_York", storage_state=context.storage_state(),
        )
        phone.goto(self.url("/#lanes"))
        expect(phone.locator(".lane-card")).to_have_count(4)
        expect(phone.locator("#live-list .live-item")).to_have_count(4)
        live_box = phone.locator(".live-panel").bounding_box()
        first_card = phone.locator(".lane-card").first.bounding_box()
        assert live_box is not None and first_card is not None
        self.assertLess(live_box["y"] + live_box["height"], first_card["y"] + 1)
        self.assertLessEqual(live_box["height"], PHONE["height"] * 0.45)
        self.assertLessEqual(phone.evaluate("() => document.documentElement.scrollWidth"), PHONE["width"])
        # Every tab (an admin's five) is on the screen, none hidden off its edge.
        for tab in phone.locator(".tabs .tab").all():
            tab_box = tab.bounding_box()
            assert tab_box is not None
            self.assertLessEqual(tab_box["x"] + tab_box["width"], PHONE["width"])
        self.screenshot(phone, "lanes-phone-live-first")
        phone_context.close()
        context.close()


class EightLaneTests(AdminBrowserTestCase):
    config = loopback_config(
        gateway={"id": "north-car-park", "timezone": "Asia/Shanghai"},
        lane=BOOTH_LANES,
    )

    async def test_eight_lanes_stay_usable_on_a_booth_screen(self) -> None:
        gateway, password = await self.start_site()
        await self.in_browser(lambda browser: self.eight(browser, password))
        self.no_page_errors()

    def eight(self, browser: Browser, password: str) -> None:
        context, page = self.new_page(browser, viewport=BOOTH_SCREEN)
        page.goto(self.url())
        self.sign_in(page, "admin", password)
        cards = page.locator(".lane-card")
        expect(cards).to_have_count(8)
        self.assertLessEqual(
            page.evaluate("() => document.documentElement.scrollWidth"), BOOTH_SCREEN["width"]
        )
        boxes = [cards.nth(n).bounding_box() for n in range(8)]
        for n, box in enumerate(boxes):
            assert box is not None
            self.assertGreaterEqual(box["width"], 300, f"card {n + 1}")
            button = cards.nth(n).locator('[data-action="open"]').bounding_box()
            assert button is not None
            self.assertGreaterEqual(button["height"], 44)
            # The button is inside its card (nothing cut off or overlapping).
            self.assertGreaterEqual(button["y"], box["y"])
            self.assertLessEqual(button["y"] + button["height"], box["y"] + box["height"])
        # Two rows of cards at least are on the first screen.
        on_screen = [box for box in boxes if box and box["y"] + box["height"] <= BOOTH_SCREEN["height"]]
        self.assertGreaterEqual(len(on_screen), 4)
        context.close()


# Chromium's rule for a page nobody has touched yet, as on a booth PC.
AUTOPLAY_RULE = ("--autoplay-policy=document-user-activation-required",)


class AttentionTests(AdminBrowserTestCase):
    """A refused car calls for attention: a banner on every page and a sound,
    until an operator acknowledges it. The browser keeps the page silent
    until someone clicks or types on it, and the page says so."""

    async def test_the_banner_calls_until_an_operator_acknowledges_it(self) -> None:
        gateway, password = await self.start_site()
        await self.add_user("wall", "wall-screen-pass-1", "viewer")
        camera = self.camera()
        await self.until(lambda: gateway.service.registry.held_polls() == 1, what="a held comet poll")
        await self.in_browser(lambda browser: self.attention(browser, camera, password), args=AUTOPLAY_RULE)
        self.no_page_errors()

    def attention(self, browser: Browser, camera: SimulatedCamera, password: str) -> None:
        context, page = self.new_page(browser)
        page.goto(self.url())
        self.sign_in(page, "admin", password)
        wall_context, wall = self.new_page(browser)
        wall.goto(self.url())
        self.sign_in(wall, "wall", "wall-screen-pass-1")
        # Opened again, signed in, without a click (a screen switched on that
        # shows the page by itself): the browser keeps it silent, and the page
        # says so.
        signed_in = context.storage_state()
        context.close()
        context, page = self.new_page(browser, storage_state=signed_in)
        page.goto(self.url())
        expect(page.locator("#app")).to_be_visible()
        expect(page.locator("#sound-locked")).to_be_visible()
        expect(page.locator("#sound-locked")).to_contain_text("click or press a key")
        expect(page.locator("body")).to_have_attribute("data-sound", "locked")
        expect(page.locator("#attention")).to_be_hidden()

        # A car the list does not know: a banner on both pages.
        self.on_reactor(camera.read_plate, PLATE)
        banner = page.locator("#attention .attention-item")
        expect(banner).to_have_count(1)
        expect(banner).to_have_attribute("data-kind", "refused")
        expect(banner.locator(".attention-text")).to_have_text(f"{PLATE} on Entrance refused: unknown plate")
        expect(page.locator("#attention")).to_have_attribute("data-played", "chime:locked")
        wall_banner = wall.locator("#attention .attention-item")
        expect(wall_banner).to_have_count(1)
        # A viewer cannot acknowledge; it may hide the banner on its own screen only.
        expect(wall_banner.locator('[data-action="acknowledge"]')).to_have_count(0)
        expect(wall_banner.locator('[data-action="hide"]')).to_be_visible()

        # The first click anywhere unlocks the sound.
        page.locator(".live-panel h2").click()
        expect(page.locator("body")).to_have_attribute("data-sound", "on")
        expect(page.locator("#sound-locked")).to_be_hidden()
        self.on_reactor(camera.read_plate, "沪C99999")
        expect(banner).to_have_count(2)
        expect(page.locator("#attention")).to_have_attribute("data-played", "chime:locked chime")
        self.screenshot(page, "attention")

        # Acknowledged by the operator: gone from every page.
        banner.first.locator('[data-action="acknowledge"]').click()
        expect(banner).to_have_count(1)
        expect(wall_banner).to_have_count(1)
        banner.first.locator('[data-action="acknowledge"]').click()
        expect(page.locator("#attention")).to_be_hidden()
        expect(wall.locator("#attention")).to_be_hidden()
        entries = self.on_reactor(lambda: self.gateway.store.audit_entries())
        self.assertEqual([e.action for e in entries[:2]], ["acknowledge_alert", "acknowledge_alert"])
        self.assertEqual({e.who for e in entries[:2]}, {"admin"})

        # In Chinese too.
        page.locator("#app .lang-switch").click()
        self.on_reactor(camera.read_plate, "粤D11111")
        expect(banner.locator(".attention-text")).to_have_text("Entrance：粤D11111 未放行（未登记车牌）")
        expect(banner.locator('[data-action="acknowledge"]')).to_have_text("确认")
        page.locator("#app .lang-switch").click()
        wall_context.close()
        context.close()


OCCUPANCY_PLATE = "京A12345"


def board_lines(data: bytes | bytearray) -> list[str]:
    """The text lines every frame a board received shows; fails on any
    byte outside a valid frame."""
    split = split_frames(bytes(data))
    assert (split.skipped, split.rest) == (0, b""), "bytes outside valid frames"
    lines: list[str] = []
    for frame in split.frames:
        command = decode_frame(frame).command
        if isinstance(command, ShowLines):
            lines.extend(line.text for line in command.lines)
    return lines


class OccupancyTests(AdminBrowserTestCase):
    """Cars in and out: the count on the page and the free spaces on the
    entrance's LED board (a pty standing in for its RS-485 adapter) follow,
    and an operator corrects the count with a reason."""

    async def test_entry_and_exit_move_the_count_to_the_page_and_the_led_board(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        self.board = PtyBoard(os.path.join(directory, "led-entrance"))
        self.addCleanup(self.board.close)
        self.config = loopback_config(
            gateway={"id": "north-car-park", "timezone": "Asia/Shanghai"},
            policy={"duplicate_window_seconds": 0, "unknown_plate": "allow"},
            lane=[
                {
                    "name": "Entrance", "camera": ENTRANCE, "barrier_channel": 1,
                    "sync_whitelist": False,
                    "display": {"via": "serial", "port": "led", "dwell_seconds": 1},
                },
                {"name": "Exit", "camera": EXIT, "direction": "out", "sync_whitelist": False},
            ],
            serial={"led": {"device": self.board.path, "exclusive": False}},
            occupancy={"capacity": 10},
        )
        gateway, password = await self.start_site()
        await self.until(
            lambda: gateway.service.ports.status("led").state.value == "open", what="the led port"
        )
        entrance = self.camera()
        exit_camera = self.camera(serialno=EXIT, ipaddr="192.168.1.101")
        await self.until(lambda: gateway.service.registry.held_polls() == 2, what="two comet polls")
        await self.until(lambda: "剩余车位 10" in self.board_now(), what="the free spaces on the board")
        await self.in_browser(lambda browser: self.occupancy(browser, entrance, exit_camera, password))
        self.no_page_errors()

    def board_now(self) -> list[str]:
        """What the board shows now: the lines of the last frame it got."""
        self.board.read()
        return board_lines(self.board.received)[-4:]

    def board_shows(self, text: str) -> None:
        self.wait_on_reactor(lambda: text in self.board_now(), f"{text!r} on the entrance board")

    def occupancy(
        self, browser: Browser, entrance: SimulatedCamera, exit_camera: SimulatedCamera, password: str
    ) -> None:
        context, page = self.new_page(browser)
        page.goto(self.url())
        self.sign_in(page, "admin", password)
        site = page.locator('#occupancy .occupancy-chip[data-area=""]')
        expect(site.locator(".occupancy-inside")).to_have_text("0 inside")
        expect(site.locator(".occupancy-free")).to_have_text("10 of 10 free")

        # A car comes in: one inside, nine free, on the page and the board.
        self.on_reactor(entrance.read_plate, OCCUPANCY_PLATE)
        expect(site.locator(".occupancy-inside")).to_have_text("1 inside")
        expect(site.locator(".occupancy-free")).to_have_text("9 of 10 free")
        self.board_shows("剩余车位 9")
        self.screenshot(page, "occupancy")

        # It leaves: the session is closed, the space free again.
        self.on_reactor(exit_camera.read_plate, OCCUPANCY_PLATE)
        expect(site.locator(".occupancy-inside")).to_have_text("0 inside")
        self.board_shows("剩余车位 10")
        async def closed() -> list[Any]:
            sessions = await self.gateway.store.parking_sessions()
            return [s for _, s in sessions if s.state.value == "closed"]

        (session,) = self.wait_on_reactor(closed, "the closed session kept")
        self.assertEqual(session.plate, OCCUPANCY_PLATE)
        self.assertEqual((session.entry_lane, session.exit_lane), ("Entrance", "Exit"))

        # The operator counts three cars the cameras never saw.
        site.locator('[data-action="correct"]').click()
        form = page.locator("#form-dialog-form")
        form.locator("[name=inside]").fill("3")
        form.locator("[name=reason]").fill("three cars parked before the cameras went in")
        page.click("#form-dialog-ok")
        expect(page.locator("#form-dialog")).to_be_hidden()
        expect(site.locator(".occupancy-inside")).to_have_text("3 inside")
        expect(site.locator(".occupancy-free")).to_have_text("7 of 10 free")
        self.board_shows("剩余车位 7")
        events = self.on_reactor(lambda: self.gateway.store.recent_events(limit=1, type="occupancy"))
        self.assertEqual(events[0].raw["operator"], "admin")
        self.assertEqual(events[0].raw["inside"], 3)
        context.close()


class LaneCommandTests(AdminBrowserTestCase):
    """Hold open, close, read now and snapshot are on a lane's card only
    when its camera can carry them out (the capability table): a current
    Vzenith camera can do them all, a ParkingCam camera only close."""

    async def test_the_lane_card_offers_what_the_camera_can_do(self) -> None:
        gateway, password = await self.start_site()
        vzenith = self.camera()
        parkingcam = self.camera(serialno=EXIT, dialect="parkingcam", ipaddr="192.168.1.101")
        registry = gateway.service.registry

        def both_heard() -> bool:
            exit_camera = registry.get(EXIT)
            return (
                registry.held_polls() >= 1
                and exit_camera is not None
                and exit_camera.online
                and exit_camera.dialect is not None
                and exit_camera.dialect.value == "parkingcam"
            )

        await self.until(both_heard, what="the comet poll and the ParkingCam heartbeat")
        await self.in_browser(lambda browser: self.commands(browser, vzenith, parkingcam, password))
        self.no_page_errors()

    def commands(
        self, browser: Browser, vzenith: SimulatedCamera, parkingcam: SimulatedCamera, password: str
    ) -> None:
        context, page = self.new_page(browser)
        page.goto(self.url())
        self.sign_in(page, "admin", password)
        entrance = page.locator(f'.lane-card[data-camera="{ENTRANCE}"]')
        exit_lane = page.locator(f'.lane-card[data-camera="{EXIT}"]')
        for action in ("hold-open", "close", "trigger"):
            expect(entrance.locator(f'[data-action="{action}"]')).to_be_enabled()
        expect(exit_lane.locator('[data-action="close"]')).to_be_enabled()
        expect(exit_lane.locator('[data-action="hold-open"]')).to_have_count(0)
        expect(exit_lane.locator('[data-action="trigger"]')).to_have_count(0)
        expect(exit_lane.locator('[data-action="snapshot"]')).to_have_count(0)
        self.screenshot(page, "lanes-commands")

        # Hold open asks first, then the camera's output stays on; close brings it down.
        entrance.locator('[data-action="hold-open"]').click()
        expect(page.locator("#confirm-text")).to_contain_text("stays up until it is closed")
        page.click("#confirm-ok")
        self.wait_on_reactor(lambda: vzenith.io_outputs[1] == 1, "the barrier held open")
        entrance.locator('[data-action="close"]').click()
        expect(page.locator("#confirm-text")).to_contain_text("Make sure no car is under it")
        page.click("#confirm-ok")
        self.wait_on_reactor(lambda: vzenith.io_outputs[1] == 0, "the barrier closed")
        # Read now: no question, the camera reads the lane by itself.
        entrance.locator('[data-action="trigger"]').click()
        self.wait_on_reactor(lambda: vzenith.manual_triggers == 1, "the camera's manual trigger")
        # The ParkingCam camera closes its barrier in a heartbeat's reply.
        exit_lane.locator('[data-action="close"]').click()
        page.click("#confirm-ok")
        self.wait_on_reactor(lambda: len(parkingcam.barrier_closes) == 1, "the exit barrier closed")
        context.close()


class RefusedCarTests(AdminBrowserTestCase):
    """The car the gate kept out, handled at the booth, and the day it makes:
    opened with a reason (the event names the operator), a misread plate
    corrected and decided again, a car with no readable plate let in by
    hand, then the day's report, its events exported and the shift's
    hand-over."""

    async def test_refused_cars_at_the_booth_and_the_days_export(self) -> None:
        from gateway.policy.whitelist import WhitelistEntry

        gateway, password = await self.start_site()
        camera = self.camera()
        await self.until(lambda: gateway.service.registry.held_polls() == 1, what="a held comet poll")
        await gateway.service.plate_list.upsert([WhitelistEntry(PLATE)])
        await self.in_browser(lambda browser: self.refused_cars(browser, camera, password))
        self.no_page_errors()

    def kept(self, kind: str) -> list[Any]:
        return cast(
            list[Any], self.on_reactor(lambda: self.gateway.store.recent_events(limit=20, type=kind))
        )

    def pulses(self, camera: SimulatedCamera, count: int) -> None:
        self.wait_on_reactor(lambda: len(camera.relay_pulses) >= count, f"relay pulse {count}")

    def refused_cars(self, browser: Browser, camera: SimulatedCamera, password: str) -> None:
        context, page = self.new_page(browser)
        page.goto(self.url())
        self.sign_in(page, "admin", password)
        entrance = page.locator(f'.lane-card[data-camera="{ENTRANCE}"]')
        refused = entrance.locator('[data-role="refused-actions"]')
        dialog = page.locator("#form-dialog")

        # A refused car, opened for with a reason and a note (read once the
        # page follows the live stream and shows the lanes).
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
        expect(entrance).to_be_visible()
        self.on_reactor(camera.read_plate, "沪C55555")
        expect(entrance.locator(".band-reason")).to_have_text("unknown plate")
        refused.locator('[data-action="open-for-read"]').click()
        expect(dialog.locator(".dialog-text")).to_contain_text("沪C55555")
        dialog.locator("select[name=reason]").select_option("visitor")
        page.click("#form-dialog-ok")
        expect(dialog.locator('[data-error-for="note"]')).to_have_text("required")
        dialog.locator("input[name=note]").fill("Guest of the site office")
        self.screenshot(page, "refused-open")
        page.click("#form-dialog-ok")
        expect(dialog).to_be_hidden()
        self.pulses(camera, 1)
        (read,) = [e for e in self.kept("plate") if e.plate == "沪C55555"]
        (opened,) = self.kept("operator_open")
        self.assertEqual(opened.answers, read.id)
        self.assertEqual(opened.raw["operator"]["name"], "admin")
        # The read's details say what the booth did, and who.
        page.locator("#live-list .live-item", has_text="沪C55555").click()
        answers = page.locator("#event-body [data-role=event-answers]")
        expect(answers).to_contain_text("admin · Opened by an operator · Visitor")
        expect(answers).to_contain_text("Guest of the site office")
        self.screenshot(page, "event-answered")
        page.click("#event-close")
        # The open itself, found among the events, names the operator.
        page.click('.tab[data-view="events"]')
        page.select_option("#events-form [name=type]", "operator_open")
        page.locator("#events-form button[type=submit]").click()
        expect(page.locator("#events-rows tr")).to_have_count(1)
        page.locator("#events-rows tr").first.click()
        expect(page.locator("#event-body [data-role=event-operator]")).to_have_text("by admin")
        expect(page.locator("#event-body")).to_contain_text(read.id)
        page.click("#event-close")

        # A misread: the right plate is on the list; decided again, it opens.
        page.click('.tab[data-view="lanes"]')
        self.on_reactor(camera.read_plate, "京A17345")
        expect(entrance.locator(".lane-plate .plate")).to_have_text("京A17345")
        refused.locator('[data-action="correct"]').click()
        expect(dialog.locator("input[name=plate]")).to_have_value("京A17345")
        expect(dialog.locator("input[name=decide]")).to_be_checked()
        dialog.locator("input[name=plate]").fill(PLATE)
        dialog.locator("input[name=note]").fill("7 read for 2")
        self.screenshot(page, "correct")
        page.click("#form-dialog-ok")
        expect(dialog).to_be_hidden()
        expect(page.locator(".toast").last).to_contain_text("may pass (whitelisted)")
        self.pulses(camera, 2)
        (misread,) = [e for e in self.kept("plate") if e.plate == "京A17345"]
        (fixed,) = self.kept("plate_correction")
        self.assertEqual((fixed.answers, fixed.plate, fixed.decision_open), (misread.id, PLATE, True))
        self.assertFalse(self.on_reactor(lambda: self.gateway.store.get_event(misread.id)).decision_open)

        # No readable plate: let in by hand with the plate typed.
        self.on_reactor(camera.read_plate, "_无_")
        expect(entrance.locator(".band-reason")).to_have_text("no plate read")
        entrance.locator('[data-action="manual-entry"]').click()
        dialog.locator("input[name=plate]").fill("粤B77777")
        dialog.locator("select[name=reason]").select_option("no_plate")
        dialog.locator("input[name=note]").fill("Plate covered in mud")
        self.screenshot(page, "manual-entry")
        page.click("#form-dialog-ok")
        expect(dialog).to_be_hidden()
        self.pulses(camera, 3)
        (no_plate,) = [e for e in self.kept("plate") if e.decision_reason == "no_plate"]
        (manual,) = self.kept("manual_entry")
        self.assertEqual((manual.plate, manual.answers, manual.lane), ("粤B77777", no_plate.id, "Entrance"))

        # The day: per lane, in the site's time zone.
        page.click('.tab[data-view="reports"]')
        row = page.locator('#report-table tr[data-lane="Entrance"]')
        expect(row.locator('[data-column="entries"]')).to_have_text("3")
        expect(row.locator('[data-column="refused_total"]')).to_have_text("3")
        expect(row.locator('[data-column="manual_opens"]')).to_have_text("1")
        expect(row.locator('[data-column="corrections"]')).to_have_text("1")
        expect(row.locator('[data-column="manual_entries"]')).to_have_text("1")
        expect(row).to_contain_text("no plate read 1, unknown plate 2")
        self.screenshot(page, "reports")
        # Its events, exported: every read and what the booth did, by whom.
        with page.expect_download() as download:
            page.click("#report-export")
        text = Path(download.value.path()).read_text(encoding="utf-8-sig")
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        by_type: dict[str, list[dict[str, str]]] = {}
        for exported in rows:
            by_type.setdefault(exported["type"], []).append(exported)
        self.assertEqual(len(by_type["plate"]), 3)
        for kind in ("operator_open", "plate_correction", "manual_entry"):
            (action,) = by_type[kind]
            self.assertEqual(action["operator"], "admin", kind)
        self.assertEqual(by_type["operator_open"][0]["answers"], read.id)
        self.assertEqual(by_type["operator_open"][0]["note"], "Guest of the site office")
        self.assertTrue(rows[0]["time"].endswith("+08:00"), rows[0]["time"])
        # The shift's hand-over, ready to print.
        page.locator("#handover-form button[type=submit]").click()
        actions = page.locator("#handover-actions tbody tr")
        expect(actions).to_have_count(3)
        expect(actions.nth(0)).to_contain_text("Guest of the site office")
        expect(actions.nth(2)).to_contain_text("粤B77777")
        expect(page.locator("#handover-print")).to_be_visible()
        page.locator("#handover-form").scroll_into_view_if_needed()
        page.evaluate("() => document.getElementById('handover-form').scrollIntoView()")
        self.screenshot(page, "handover")

        # The same in Chinese.
        page.locator("#app .lang-switch").click()
        expect(page.locator('.tab[data-view="reports"]')).to_have_text("报表")
        expect(page.locator("#handover-actions tbody tr").nth(2)).to_contain_text("人工登记")
        page.locator("#app .lang-switch").click()
        context.close()
