/* The admin page of the ANPR gateway: lanes, live plates, events, the
 * whitelist and the gateway's status, on top of the admin API.
 *
 * One plain script, no framework and nothing fetched from the internet: the
 * page must work on a site network with no outside link. Data never goes
 * through innerHTML (plates and notes are text typed by people or read by
 * cameras): every node is built with createElement and textContent.
 */
(function () {
  "use strict";

  const STRINGS = window.ANPR_I18N;
  const LANG_KEY = "anpr.lang";
  const VIEWS = ["lanes", "events", "whitelist", "reports", "status", "users"];
  const AUDIT_PAGE = 50;
  const LIVE_MAX = 40;
  const EVENTS_PAGE = 50;
  const WHITELIST_PAGE = 50;
  const STATUS_REFRESH_MS = 10000;
  const CAMERAS_REFRESH_MS = 30000;
  const REASONS = [
    "whitelist", "blacklist", "expired", "not_yet_valid", "outside_hours", "disabled",
    "wrong_lane", "unknown", "no_plate", "offline_record", "duplicate",
  ];
  const EVENT_TYPES = [
    "plate", "io", "serial", "snapshot", "camera_online", "camera_offline", "command_result", "occupancy",
    "operator_open", "plate_correction", "manual_entry",
  ];
  const ATTENTION_KINDS = ["blacklist", "refused", "camera_offline", "display_fault", "cloud_down"];
  // What someone at the booth did: each names the operator and the read it answers.
  const OPERATOR_TYPES = ["operator_open", "plate_correction", "manual_entry"];
  const FINAL_COMMAND_STATES = ["delivered", "completed", "expired", "failed"];

  // Stroke icons, 24x24: drawn here so that nothing is fetched.
  const ICONS = {
    gate: "M4 21V10M2 21h5M4 12.5L20 5M8 11v2.6M12 9.2v2.7M16 7.5v2.6",
    camera: "M3 8h4l2-3h6l2 3h4v11H3zM15 13a3 3 0 1 1-6 0a3 3 0 0 1 6 0z",
    display: "M3 5h18v11H3zM8 20h8M12 16v4M7 9h4M7 12h7",
    plus: "M12 5v14M5 12h14",
    upload: "M12 16V4M7 9l5-5l5 5M4 20h16",
    download: "M12 4v12M7 11l5 5l5-5M4 20h16",
    edit: "M4 20h4L19 9l-4-4L4 16zM13 7l4 4",
    trash: "M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13M10 11v6M14 11v6",
    replay: "M4 12a8 8 0 1 0 2.5-5.8M4 4v5h5",
    expand: "M4 9V4h5M20 9V4h-5M4 15v5h5M20 15v5h-5",
    check: "M5 12l5 5L20 7",
    barrier_down: "M4 21V10M2 21h5M4 12.5h16M8 11v3M12 11v3M16 11v3",
  };

  const state = {
    lang: "en",
    session: null, // {user, role, csrf_token}
    cameras: [],
    commands: new Map(), // camera key -> last command {id, type, state, reason}
    flash: new Set(), // camera keys whose card shows a new plate
    live: [],
    view: null,
    events: { loaded: false, rows: [], nextBefore: null, query: null, loading: false, token: 0 },
    whitelist: { loaded: false, q: "", offset: 0, entries: [], total: 0, editing: null, token: 0 },
    status: null,
    statusAt: null,
    accounts: { users: [], tokens: [], audit: [], auditNext: null, minPassword: 10, token: 0 },
    // answered: reads the booth has acted on since the page loaded (their
    // card no longer offers the refused-car buttons).
    booth: { reasons: [], report: null, handover: null, answered: new Set() },
    stream: null,
    streamRetry: 0,
    streamTimer: null,
    timers: [],
    statusTimer: null,
    refetchTimer: null,
    imageUrl: null,
    // Alerts waiting for an acknowledgement, the sound of each kind, and the
    // page's audio (locked by the browser until the first interaction).
    attention: { alerts: [], sounds: {}, audio: null, played: [] },
    occupancy: null,
  };

  // ---------------------------------------------------------------- strings

  function t(key, params) {
    const table = STRINGS[state.lang] || STRINGS.en;
    let text = key in table ? table[key] : key in STRINGS.en ? STRINGS.en[key] : key;
    if (params) {
      text = text.replace(/\{(\w+)\}/g, (whole, name) =>
        name in params && params[name] !== null && params[name] !== undefined ? String(params[name]) : whole);
    }
    return text;
  }

  /** ``t`` for a sentence about ``count`` things: the "_one" form for 1. */
  function tn(key, count, params) {
    return t(Number(count) === 1 && has(`${key}_one`) ? `${key}_one` : key, params);
  }

  function has(key) {
    return key in (STRINGS[state.lang] || STRINGS.en);
  }

  function preferredLanguage() {
    let saved = null;
    try {
      saved = window.localStorage.getItem(LANG_KEY);
    } catch (error) {
      saved = null; // storage blocked: follow the browser
    }
    if (saved === "zh" || saved === "en") return saved;
    const wanted = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
    for (const tag of wanted) {
      const lower = String(tag).toLowerCase();
      if (lower.startsWith("zh")) return "zh";
      if (lower.startsWith("en")) return "en";
    }
    return "en";
  }

  function applyStaticStrings() {
    document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
    document.title = t("app.title");
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
    for (const node of document.querySelectorAll("[data-i18n-title]")) node.title = t(node.dataset.i18nTitle);
    for (const node of document.querySelectorAll("[data-i18n-aria-label]")) node.setAttribute("aria-label", t(node.dataset.i18nAriaLabel));
  }

  function setLanguage(lang, remember) {
    state.lang = lang;
    if (remember) {
      try {
        window.localStorage.setItem(LANG_KEY, lang);
      } catch (error) {
        // Storage blocked: the choice lasts for this page only.
      }
    }
    applyStaticStrings();
    renderEverything();
  }

  // -------------------------------------------------------------- DOM tools

  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [name, value] of Object.entries(props)) {
        if (value === null || value === undefined || value === false) continue;
        if (name === "class") node.className = value;
        else if (name === "text") node.textContent = value;
        else if (name === "dataset") Object.assign(node.dataset, value);
        else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
        else if (value === true) node.setAttribute(name, "");
        else node.setAttribute(name, String(value));
      }
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) append(node, child);
      else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function icon(name) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("class", "icon-svg");
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", ICONS[name]);
    svg.append(path);
    return svg;
  }

  function fillIcons(root) {
    for (const slot of root.querySelectorAll("[data-icon]")) {
      if (!slot.firstChild) slot.append(icon(slot.dataset.icon));
    }
  }

  function $(id) {
    return document.getElementById(id);
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // ------------------------------------------------------------- formatting

  function toDate(value) {
    if (value === null || value === undefined || value === "") return null;
    const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
    return isNaN(date.getTime()) ? null : date;
  }

  const siteFormats = new Map();

  /** The calendar date and clock of ``date`` in the site's time zone (the
   * gateway's, from the session), whatever the browser's own zone is: a
   * booth PC or a manager's phone set to another zone shows site times. */
  function siteClock(date) {
    const zone = (state.session && state.session.timezone) || "UTC";
    let format = siteFormats.get(zone);
    if (!format) {
      try {
        format = new Intl.DateTimeFormat("en-GB", {
          timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
          hour: "2-digit", minute: "2-digit", second: "2-digit",
        });
      } catch (error) {
        format = new Intl.DateTimeFormat("en-GB", {
          timeZone: "UTC", hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
          hour: "2-digit", minute: "2-digit", second: "2-digit",
        });
      }
      siteFormats.set(zone, format);
    }
    const parts = {};
    for (const part of format.formatToParts(date)) parts[part.type] = part.value;
    return {
      date: `${parts.year}-${parts.month}-${parts.day}`,
      monthDay: `${parts.month}-${parts.day}`,
      clock: `${parts.hour}:${parts.minute}:${parts.second}`,
      compact: `${parts.year}${parts.month}${parts.day}-${parts.hour}${parts.minute}${parts.second}`,
    };
  }

  function fmtDateTime(value) {
    const date = toDate(value);
    if (!date) return t("common.none");
    const site = siteClock(date);
    return `${site.date} ${site.clock}`;
  }

  /** The time of day for today (at the site), else the date and time. */
  function fmtClock(value) {
    const date = toDate(value);
    if (!date) return t("common.none");
    const site = siteClock(date);
    if (site.date === siteClock(new Date()).date) return site.clock;
    return `${site.monthDay} ${site.clock}`;
  }

  function fmtDuration(seconds) {
    seconds = Math.max(0, Math.round(Number(seconds) || 0));
    const d = Math.floor(seconds / 86400);
    const hrs = Math.floor((seconds % 86400) / 3600);
    const min = Math.floor((seconds % 3600) / 60);
    if (d > 0) return `${t("time.d", { n: d })} ${t("time.h", { n: hrs })}`;
    if (hrs > 0) return `${t("time.h", { n: hrs })} ${t("time.min", { n: min })}`;
    if (min > 0) return t("time.min", { n: min });
    return t("time.s", { n: seconds });
  }

  function fmtAgo(value) {
    const date = toDate(value);
    if (!date) return "";
    const seconds = (Date.now() - date.getTime()) / 1000;
    if (seconds < 5) return t("time.now");
    const unit = seconds < 60 ? fmtDuration(seconds)
      : seconds < 3600 ? t("time.min", { n: Math.floor(seconds / 60) })
        : seconds < 86400 ? t("time.h", { n: Math.floor(seconds / 3600) })
          : t("time.d", { n: Math.floor(seconds / 86400) });
    return t("time.ago", { time: unit });
  }

  function fmtBytes(value) {
    if (value === null || value === undefined) return t("common.none");
    let n = Number(value);
    const units = ["B", "KB", "MB", "GB", "TB"];
    let unit = 0;
    while (n >= 1024 && unit < units.length - 1) {
      n /= 1024;
      unit += 1;
    }
    return `${unit === 0 ? n : n.toFixed(n >= 100 ? 0 : 1)} ${units[unit]}`;
  }

  function fmtNumber(value) {
    if (value === null || value === undefined) return t("common.none");
    return Number(value).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB");
  }

  function reasonText(reason) {
    if (!reason) return "";
    return has(`reason.${reason}`) ? t(`reason.${reason}`) : reason;
  }

  function plateText(summary) {
    return (summary && (summary.plate || summary.license)) || "";
  }

  /** A plate as a car carries it: blue, or green for the 8-character
   * new-energy plates. */
  function plateChip(text, size) {
    const chars = Array.from(text || "");
    const kind = chars.length === 8 ? "plate-green" : "plate-blue";
    return h("span", { class: `plate ${kind} plate-${size}`, text: text || t("common.none") });
  }

  function decisionBadge(decision, size) {
    if (!decision) return h("span", { class: `badge badge-none badge-${size}`, text: t("decision.none") });
    return h("span", {
      class: `badge ${decision.open ? "badge-open" : "badge-denied"} badge-${size}`,
      text: t(decision.open ? "decision.open" : "decision.denied"),
    });
  }

  function laneLabel(camera) {
    return camera.lane || camera.serialno;
  }

  function cameraKey(serial) {
    return String(serial || "").toLowerCase();
  }

  function cameraBySerial(serial) {
    const key = cameraKey(serial);
    return state.cameras.find((camera) => cameraKey(camera.serialno) === key) || null;
  }

  function laneOfEvent(summary) {
    if (summary.lane) return summary.lane;
    const camera = cameraBySerial(summary.camera);
    return camera ? laneLabel(camera) : summary.camera;
  }

  function imageUrl(summary, kind) {
    return `/api/events/${encodeURIComponent(summary.id)}/image/${kind}`;
  }

  function hasImage(summary, kind) {
    return Array.isArray(summary.images) && summary.images.includes(kind);
  }

  // ----------------------------------------------------------------- toasts

  function toast(message, kind) {
    const box = $("toasts");
    const item = h("div", {
      class: `toast toast-${kind || "info"}`,
      role: kind === "error" ? "alert" : "status",
      onclick: () => item.remove(),
    }, message);
    box.prepend(item);
    while (box.children.length > 4) box.lastChild.remove();
    window.setTimeout(() => item.remove(), kind === "error" ? 10000 : 5000);
  }

  function failed(action, error) {
    if (error && error.status === 401) return; // back at the sign-in form already
    toast(t("error.failed", { action, error: errorText(error) }), "error");
  }

  function errorText(error) {
    if (!error) return "";
    if (error.status === 0) return t("error.network");
    if (error.status === 403) return t("error.forbidden");
    if (error.status === 504) return t("error.timeout");
    return error.message || String(error);
  }

  // -------------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message, data, response) {
      super(message);
      this.status = status;
      this.data = data;
      this.response = response;
    }
  }

  /** One request to the admin API. JSON in and out; the CSRF token on every
   * state-changing request; a 401 anywhere ends the session on the page. */
  async function api(method, path, options) {
    const opts = options || {};
    const headers = { Accept: opts.accept || "application/json" };
    let body;
    if (method !== "GET" && method !== "HEAD" && state.session) headers["X-CSRF-Token"] = state.session.csrf_token;
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.json);
    } else if (opts.body !== undefined) {
      headers["Content-Type"] = opts.contentType || "application/octet-stream";
      body = opts.body;
    }
    let response;
    try {
      response = await fetch(path, { method, headers, body, credentials: "same-origin", cache: "no-store" });
    } catch (error) {
      throw new ApiError(0, t("error.network"), null, null);
    }
    if (response.status === 401 && !opts.allow401) {
      toLogin("expired");
      throw new ApiError(401, t("login.expired"), null, response);
    }
    if (!response.ok) {
      let data = null;
      try {
        data = await response.json();
      } catch (error) {
        data = null; // not JSON (a proxy's page): the status line says enough
      }
      const message = (data && data.error) || (response.status === 404 ? t("error.not_found") : `HTTP ${response.status}`);
      throw new ApiError(response.status, message, data, response);
    }
    if (opts.raw) return response;
    if (response.status === 204) return null;
    const type = response.headers.get("Content-Type") || "";
    return type.includes("json") ? response.json() : response.text();
  }

  // ---------------------------------------------------------------- session

  function canAct() {
    return !!state.session && (state.session.role === "admin" || state.session.role === "operator");
  }

  function canReplay() {
    return !!state.session && state.session.role === "admin";
  }

  async function boot() {
    state.lang = preferredLanguage();
    applyStaticStrings();
    fillIcons(document);
    wireStatic();
    await bootSession(0);
  }

  /** Ask who is signed in. Only a 401 means "sign in"; no answer, or a
   * gateway still starting (503), is asked again until it answers: a wall
   * screen powered on before the gateway signs itself in. */
  async function bootSession(attempt) {
    let response = null;
    try {
      response = await fetch("/api/session", { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } });
    } catch (error) {
      response = null;
    }
    if (response && response.ok) {
      document.body.classList.remove("booting");
      startApp(await response.json());
      return;
    }
    if (response && response.status === 401) {
      document.body.classList.remove("booting");
      toLogin(null);
      return;
    }
    document.body.classList.remove("booting");
    $("app").hidden = true;
    $("login-view").hidden = false;
    const message = $("login-message");
    // A 503 says why (a store that cannot open): shown as it is, not as
    // "starting", and asked again until the gateway can serve.
    let reason = null;
    if (response && response.status === 503) {
      try {
        const data = await response.json();
        reason = data && data.error ? data.error : null;
      } catch (error) {
        reason = null;
      }
    }
    message.textContent = reason ? t("login.unavailable", { reason }) : t("live.unreachable");
    message.className = reason ? "form-message form-error" : "form-message form-info";
    message.dataset.role = "unreachable";
    message.hidden = false;
    window.setTimeout(() => bootSession(attempt + 1), Math.min(10000, 1000 * 2 ** Math.min(attempt, 3)));
  }

  function toLogin(reason) {
    const wasIn = state.session !== null;
    state.session = null;
    stopLiveWork();
    document.body.classList.remove("role-admin", "role-operator", "role-viewer");
    $("app").hidden = true;
    $("login-view").hidden = false;
    const message = $("login-message");
    if (reason && (wasIn || reason === "signed_out")) {
      message.textContent = t(reason === "signed_out" ? "login.signed_out" : "login.expired");
      message.className = "form-message form-info";
      message.hidden = false;
    } else if (!reason) {
      message.hidden = true;
    }
    $("login-password").value = "";
    closeDialogs();
    $("login-username").focus();
  }

  async function submitLogin(event) {
    event.preventDefault();
    const message = $("login-message");
    const button = $("login-submit");
    const username = $("login-username").value.trim();
    const password = $("login-password").value;
    message.hidden = true;
    if (!username || !password) {
      (username ? $("login-password") : $("login-username")).focus();
      return;
    }
    button.disabled = true;
    try {
      const response = await fetch("/api/login", {
        method: "POST",
        credentials: "same-origin",
        cache: "no-store",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ username, password }),
      });
      if (response.ok) {
        startApp(await response.json());
        return;
      }
      let text;
      if (response.status === 429) {
        const wait = parseInt(response.headers.get("Retry-After") || "", 10);
        text = wait > 0 ? t("login.locked", { wait: fmtDuration(wait) }) : t("login.locked_later");
      } else if (response.status === 401) {
        text = t("login.wrong");
      } else {
        let data = null;
        try {
          data = await response.json();
        } catch (error) {
          data = null;
        }
        text = t("error.server", { error: (data && data.error) || `HTTP ${response.status}` });
      }
      message.textContent = text;
      message.className = `form-message form-error${response.status === 429 ? " form-locked" : ""}`;
      message.hidden = false;
      $("login-password").select();
    } catch (error) {
      message.textContent = t("error.network");
      message.className = "form-message form-error";
      message.hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  function startApp(session) {
    state.session = session;
    delete $("login-message").dataset.role;
    document.body.classList.remove("role-admin", "role-operator", "role-viewer");
    document.body.classList.add(`role-${session.role}`);
    document.body.classList.toggle("is-wall", !!session.wall);
    $("login-view").hidden = true;
    $("app").hidden = false;
    $("login-password").value = "";
    state.events.loaded = false;
    state.whitelist.loaded = false;
    renderUser();
    openStream();
    prepareSound();
    loadAttention();
    loadOccupancy();
    loadCameras();
    loadStatus(); // the gateway's id, shown in the top bar
    loadBooth();
    state.timers.push(window.setInterval(tickTimes, 5000));
    state.timers.push(window.setInterval(() => {
      if (state.session) loadCameras();
    }, CAMERAS_REFRESH_MS));
    route();
  }

  async function logout() {
    try {
      await api("POST", "/api/logout", { allow401: true });
    } catch (error) {
      // Signed out on the page either way; the cookie dies with the session.
    }
    toLogin("signed_out");
  }

  function stopLiveWork() {
    closeStream();
    for (const timer of state.timers) window.clearInterval(timer);
    state.timers = [];
    stopStatusTimer();
    setLiveState("connecting");
  }

  function renderUser() {
    const label = $("user-label");
    clear(label);
    if (!state.session) return;
    append(label, [
      h("span", { class: "user-name", text: state.session.user }),
      " ",
      h("span", { class: `role role-${state.session.role}`, text: t(`role.${state.session.role}`) }),
    ]);
  }

  // ----------------------------------------------------------- live stream

  function setLiveState(name) {
    const box = $("live-state");
    const wasLive = box.dataset.state === "live";
    box.dataset.state = name;
    $("live-text").textContent = t(name === "live" ? "live.connected" : name === "reconnecting" ? "live.unreachable" : "live.connecting");
    $("unreachable-banner").hidden = name !== "reconnecting";
    // While the gateway does not answer nobody knows whether a camera is
    // online: the cards say "unknown", never what they said last.
    if (wasLive !== (name === "live") && state.session) renderLanes();
  }

  function gatewayReachable() {
    return $("live-state").dataset.state === "live";
  }

  function openStream() {
    closeStream();
    const source = new EventSource("/api/stream");
    state.stream = source;
    setLiveState(state.streamRetry > 0 ? "reconnecting" : "connecting");
    source.addEventListener("open", () => {
      if (state.stream !== source) return;
      const wasDown = state.streamRetry > 0;
      state.streamRetry = 0;
      setLiveState("live");
      // Whatever happened while the stream was down is fetched again.
      if (wasDown) {
        loadCameras();
        loadAttention();
        loadOccupancy();
        if (state.view === "status") loadStatus();
      }
    });
    const handlers = {
      event: onBusEvent, camera: onBusCamera, command: onBusCommand, status: onBusStatus,
      attention: onBusAttention, occupancy: onBusOccupancy,
    };
    for (const [topic, handler] of Object.entries(handlers)) {
      source.addEventListener(topic, (message) => {
        let payload;
        try {
          payload = JSON.parse(message.data);
        } catch (error) {
          return; // a torn message: the next refresh brings the truth
        }
        try {
          handler(payload);
        } catch (error) {
          console.error(error);
        }
      });
    }
    source.addEventListener("error", () => {
      if (state.stream !== source) return;
      setLiveState("reconnecting");
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an HTTP error, such as an ended session):
        // check the session, then try again with a growing pause.
        closeStream();
        state.streamRetry += 1;
        const delay = Math.min(15000, 1000 * 2 ** Math.min(state.streamRetry - 1, 4));
        state.streamTimer = window.setTimeout(retryStream, delay);
      } else {
        state.streamRetry = Math.max(state.streamRetry, 1);
      }
    });
  }

  async function retryStream() {
    state.streamTimer = null;
    if (!state.session) return;
    try {
      await api("GET", "/api/session");
    } catch (error) {
      if (error.status === 401) return;
      state.streamRetry += 1;
      state.streamTimer = window.setTimeout(retryStream, Math.min(15000, 1000 * 2 ** Math.min(state.streamRetry, 4)));
      return;
    }
    openStream();
  }

  function closeStream() {
    if (state.stream) {
      state.stream.close();
      state.stream = null;
    }
    if (state.streamTimer) {
      window.clearTimeout(state.streamTimer);
      state.streamTimer = null;
    }
  }

  function onBusEvent(summary) {
    if (OPERATOR_TYPES.includes(summary.type)) {
      onOperatorEvent(summary);
      return;
    }
    if (summary.type !== "plate") return;
    const camera = cameraBySerial(summary.camera);
    if (camera) {
      camera.last_plate = summary;
      state.flash.add(cameraKey(camera.serialno));
      renderCard(camera);
    } else {
      scheduleCameraRefetch();
    }
    state.live = [summary, ...state.live.filter((item) => item.id !== summary.id)].slice(0, LIVE_MAX);
    renderLive();
    if (state.view === "events" && state.events.loaded && matchesQuery(summary)) {
      state.events.rows = [summary, ...state.events.rows.filter((row) => row.id !== summary.id)];
      renderEvents();
    }
  }

  function onBusCamera(described) {
    const camera = cameraBySerial(described.serialno);
    if (!camera) {
      scheduleCameraRefetch();
      return;
    }
    for (const [name, value] of Object.entries(described)) {
      // The lane comes from the configuration: never lost to a bare update.
      if (name === "lane" && !value) continue;
      camera[name] = value;
    }
    renderCard(camera);
  }

  function onBusCommand(command) {
    const camera = cameraBySerial(command.camera);
    const key = cameraKey(command.camera);
    const known = state.commands.get(key);
    if (!known || known.id === command.id || FINAL_COMMAND_STATES.includes(command.state)) {
      state.commands.set(key, command);
    }
    if (camera) renderCard(camera);
    if (command.state === "expired" || command.state === "failed") {
      const lane = camera ? laneLabel(camera) : command.camera;
      toast(`${lane}: ${commandLine(command)}${command.reason ? ` (${command.reason})` : ""}`, "error");
    }
  }

  function onBusStatus() {
    if (state.view !== "status") return;
    window.clearTimeout(state.statusDebounce);
    state.statusDebounce = window.setTimeout(loadStatus, 500);
  }

  // -------------------------------------------------------------- attention

  async function loadAttention() {
    try {
      const data = await api("GET", "/api/attention");
      state.attention.sounds = data.sounds || {};
      state.attention.alerts = Array.isArray(data.alerts) ? data.alerts : [];
      renderAttention();
      renderSoundLock();
    } catch (error) {
      failed(t("attention.title"), error);
    }
  }

  function onBusAttention(message) {
    const alerts = state.attention.alerts;
    if (message.acknowledged) {
      state.attention.alerts = alerts.filter((alert) => alert.id !== message.acknowledged);
    } else if (message.alert) {
      const alert = message.alert;
      state.attention.alerts = [...alerts.filter((item) => item.id !== alert.id), alert];
      playSound(state.attention.sounds[alert.kind]);
    }
    renderAttention();
  }

  function alertText(alert) {
    const params = {
      lane: alert.lane || "-",
      plate: alert.plate || t("attention.no_plate"),
      reason: alert.reason ? reasonText(alert.reason) : "",
      detail: alert.detail || "",
    };
    return t(`attention.kind.${alert.kind}`, params);
  }

  function renderAttention() {
    const box = $("attention");
    const list = $("attention-list");
    clear(list);
    const alerts = state.attention.alerts;
    box.hidden = alerts.length === 0;
    // Newest first: the one that just happened is on top.
    for (const alert of [...alerts].reverse()) {
      list.append(h("li", { class: `attention-item attention-${alert.kind}`, dataset: { alert: alert.id, kind: alert.kind } },
        h("span", { class: "attention-kind", text: t(`attention.label.${alert.kind}`) }),
        h("span", { class: "attention-text", text: alertText(alert) }),
        h("span", { class: "attention-time muted", text: fmtClock(alert.at) }),
        alert.count > 1 ? h("span", { class: "tag attention-count", text: t("attention.count", { count: alert.count }) }) : null,
        canAct()
          ? h("button", { class: "btn btn-small attention-ack", type: "button", "data-action": "acknowledge", onclick: () => acknowledge(alert) },
            h("span", { text: t("attention.acknowledge") }))
          // A viewer (a wall screen) cannot acknowledge: it may only hide
          // the banner on its own screen.
          : h("button", { class: "btn btn-small btn-ghost attention-hide", type: "button", "data-action": "hide", onclick: () => hideAlert(alert) },
            h("span", { text: t("attention.hide") }))));
    }
  }

  function hideAlert(alert) {
    state.attention.alerts = state.attention.alerts.filter((item) => item.id !== alert.id);
    renderAttention();
  }

  async function acknowledge(alert) {
    try {
      await api("POST", `/api/attention/${encodeURIComponent(alert.id)}/acknowledge`, { json: {} });
    } catch (error) {
      if (error.status !== 404) {
        failed(t("attention.acknowledge"), error);
        return;
      }
    }
    // Cleared here at once; the stream clears it on every other page.
    state.attention.alerts = state.attention.alerts.filter((item) => item.id !== alert.id);
    renderAttention();
  }

  /** The page's audio. Chromium starts it suspended until the user clicks
   * or presses a key on the page: until then the page says so. */
  function prepareSound() {
    if (state.attention.audio) return;
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    const audio = new Context();
    state.attention.audio = audio;
    audio.addEventListener("statechange", renderSoundLock);
    const unlock = () => {
      if (audio.state !== "running") audio.resume().then(renderSoundLock, () => {});
    };
    for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, unlock, { capture: true });
    $("sound-unlock").addEventListener("click", unlock);
    renderSoundLock();
  }

  function soundWanted() {
    return Object.values(state.attention.sounds).some((sound) => ["alarm", "chime", "beep"].includes(sound));
  }

  function renderSoundLock() {
    const audio = state.attention.audio;
    const locked = !audio || audio.state !== "running";
    const notice = $("sound-locked");
    notice.hidden = !(state.session && soundWanted() && locked);
    document.body.dataset.sound = locked ? "locked" : "on";
  }

  // Each sound: [frequency Hz, start s, length s, wave] notes, made here.
  const SOUNDS = {
    alarm: [[880, 0, 0.22, "square"], [660, 0.25, 0.22, "square"], [880, 0.5, 0.22, "square"], [660, 0.75, 0.22, "square"]],
    chime: [[1046.5, 0, 0.35, "sine"], [784, 0.3, 0.6, "sine"]],
    beep: [[880, 0, 0.18, "sine"]],
  };

  function playSound(name) {
    const notes = SOUNDS[name];
    const audio = state.attention.audio;
    if (!notes) return;
    const locked = !audio || audio.state !== "running";
    // What was played, and what the browser kept silent (for the tests).
    state.attention.played = [...state.attention.played, locked ? `${name}:locked` : name].slice(-20);
    $("attention").dataset.played = state.attention.played.join(" ");
    if (locked) return;
    const start = audio.currentTime + 0.02;
    for (const [frequency, at, length, wave] of notes) {
      const tone = audio.createOscillator();
      const gain = audio.createGain();
      tone.type = wave;
      tone.frequency.value = frequency;
      gain.gain.setValueAtTime(0.0001, start + at);
      gain.gain.exponentialRampToValueAtTime(0.25, start + at + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + at + length);
      tone.connect(gain).connect(audio.destination);
      tone.start(start + at);
      tone.stop(start + at + length + 0.05);
    }
  }

  // -------------------------------------------------------------- occupancy

  async function loadOccupancy() {
    try {
      state.occupancy = await api("GET", "/api/occupancy");
    } catch (error) {
      state.occupancy = null;
      if (error.status !== 404) failed(t("occupancy.title"), error);
    }
    renderOccupancy();
  }

  function onBusOccupancy(counts) {
    state.occupancy = counts;
    renderOccupancy();
  }

  function occupancyChip(name, count, area) {
    return h("div", { class: "occupancy-chip", dataset: { area: area || "" } },
      h("span", { class: "occupancy-name", text: name }),
      h("strong", { class: "occupancy-inside", text: t("occupancy.inside", { count: fmtNumber(count.inside) }) }),
      count.free === null || count.free === undefined
        ? null
        : h("span", { class: `occupancy-free${count.free === 0 ? " is-full" : ""}`, text: t("occupancy.free", { free: fmtNumber(count.free), capacity: fmtNumber(count.capacity) }) }),
      count.correction ? h("span", { class: "muted small", text: t("occupancy.corrected", { correction: count.correction > 0 ? `+${count.correction}` : String(count.correction) }) }) : null,
      canAct()
        ? h("button", { class: "btn btn-small btn-ghost", type: "button", "data-action": "correct", onclick: () => correctOccupancy(area, count) }, h("span", { text: t("occupancy.correct") }))
        : null);
  }

  function renderOccupancy() {
    const box = $("occupancy");
    clear(box);
    const counts = state.occupancy;
    // Shown once there is something to say: spaces known, areas, or cars.
    box.hidden = !counts || (counts.capacity === null && !(counts.areas || []).length && !counts.inside);
    if (box.hidden) return;
    box.append(occupancyChip(t("occupancy.site"), counts, ""));
    for (const area of counts.areas || []) box.append(occupancyChip(area.name, area, area.name));
  }

  async function correctOccupancy(area, count) {
    const corrected = await formDialog({
      title: t("occupancy.correct_title", { area: area || t("occupancy.site") }),
      text: t("occupancy.correct_text", { count: count.inside }),
      ok: t("occupancy.correct_ok"),
      fields: [
        { name: "inside", label: t("occupancy.cars_inside"), type: "number" },
        { name: "reason", label: t("users.reason"), maxlength: 500 },
      ],
      submit: async (values) => {
        const inside = /^\d+$/.test(values.inside.trim()) ? Number(values.inside.trim()) : values.inside;
        return api("POST", "/api/occupancy/correct", { json: { area: area || null, inside, reason: values.reason } });
      },
    });
    if (corrected) {
      toast(t("occupancy.corrected_toast", { count: corrected.inside }), "ok");
      loadOccupancy();
    }
  }

  function scheduleCameraRefetch() {
    if (state.refetchTimer) return;
    state.refetchTimer = window.setTimeout(() => {
      state.refetchTimer = null;
      loadCameras();
    }, 300);
  }

  // ------------------------------------------------------------------ lanes

  async function loadCameras() {
    try {
      const data = await api("GET", "/api/cameras");
      state.cameras = Array.isArray(data.cameras) ? data.cameras : [];
      if (state.live.length === 0) {
        // Seed the live list with each lane's last plate, newest first.
        state.live = state.cameras.map((camera) => camera.last_plate).filter(Boolean)
          .sort((a, b) => String(b.received_at).localeCompare(String(a.received_at)));
      }
      renderLanes();
      renderLive();
      fillFilterOptions();
    } catch (error) {
      failed(t("nav.lanes"), error);
    }
  }

  function renderLanes() {
    const grid = $("lanes-grid");
    // From three lanes on, the cards are compact: four fit on a 1366x768
    // booth screen without scrolling (app.css).
    grid.classList.toggle("lanes-compact", state.cameras.length >= 3);
    clear(grid);
    if (state.cameras.length === 0) {
      grid.append(h("p", { class: "empty", text: t("lane.none") }));
      return;
    }
    for (const camera of state.cameras) grid.append(buildCard(camera));
  }

  function renderCard(camera) {
    const key = cameraKey(camera.serialno);
    const old = document.querySelector(`.lane-card[data-key="${CSS.escape(key)}"]`);
    const card = buildCard(camera);
    if (old) old.replaceWith(card);
    else renderLanes();
  }

  function buildCard(camera) {
    const key = cameraKey(camera.serialno);
    const last = camera.last_plate;
    const decision = last && last.decision;
    const known = gatewayReachable();
    const online = known && !!camera.online;
    const classes = ["lane-card", !known ? "is-unknown" : online ? "is-online" : "is-offline"];
    if (decision) classes.push(decision.open ? "is-open" : "is-denied");
    if (state.flash.has(key)) {
      classes.push("is-new");
      state.flash.delete(key);
    }
    const heartbeat = camera.heartbeat && has(`heartbeat.${camera.heartbeat}`) ? t(`heartbeat.${camera.heartbeat}`) : t("heartbeat.unknown");
    const title = h("div", { class: "lane-title" },
      h("h2", { class: "lane-name", text: laneLabel(camera) }),
      camera.direction ? h("span", { class: `direction direction-${camera.direction}`, text: t(`direction.${camera.direction}`) }) : null,
      camera.lane ? null : h("span", { class: "muted small", text: t("lane.no_lane") }));
    const online_line = h("div", { class: "lane-online" },
      h("span", { class: "dot" }),
      h("strong", { class: "online-text", text: t(!known ? "lane.unknown" : online ? "lane.online" : "lane.offline") }),
      h("span", { class: "muted", text: ` · ${heartbeat}` }),
      camera.last_seen
        ? h("span", { class: "muted", dataset: { ago: String(camera.last_seen), agoKey: "lane.last_seen" }, text: ` · ${t("lane.last_seen", { ago: fmtAgo(camera.last_seen) })}` })
        : h("span", { class: "muted", text: ` · ${t("lane.never_seen")}` }));

    let plateBlock;
    if (last) {
      const crop = hasImage(last, "crop")
        ? h("button", { class: "crop-button", type: "button", title: t("lane.crop_image"), onclick: () => openImage(plateText(last), imageUrl(last, "crop")) },
          h("img", { class: "crop-image", src: imageUrl(last, "crop"), alt: t("lane.crop_image"), onerror: brokenImage }))
        : null;
      plateBlock = h("div", { class: "lane-plate" },
        h("div", { class: "plate-line" }, plateChip(plateText(last), "big"), crop),
        h("div", { class: `decision-band ${decision ? (decision.open ? "band-open" : "band-denied") : "band-none"}` },
          h("span", { class: "band-word", text: decision ? t(decision.open ? "decision.open" : "decision.denied") : t("decision.none") }),
          decision && decision.reason ? h("span", { class: "band-reason", text: reasonText(decision.reason) }) : null),
        h("div", { class: "lane-time" },
          h("strong", { text: fmtClock(last.received_at) }),
          h("span", { class: "muted", dataset: { ago: last.received_at }, text: ` · ${fmtAgo(last.received_at)}` }),
          decision && decision.source ? h("span", { class: "muted", text: ` · ${t(`source.${decision.source}`)}` }) : null,
          last.offline ? h("span", { class: "tag", text: t("events.offline") }) : null,
          last.repeat ? h("span", { class: "tag", text: t("events.repeat") }) : null));
    } else {
      plateBlock = h("div", { class: "lane-plate lane-plate-empty" }, h("span", { class: "muted big-muted", text: t("lane.no_plate") }));
    }

    const full = last && hasImage(last, "full")
      ? h("button", { class: "full-button", type: "button", title: t("lane.full_image"), onclick: () => openImage(plateText(last), imageUrl(last, "full")) },
        h("img", { class: "full-image", src: imageUrl(last, "full"), alt: t("lane.full_image"), loading: "lazy", onerror: brokenImage }),
        h("span", { class: "expand" }, icon("expand")))
      : null;

    const command = state.commands.get(key);
    const commandBlock = command
      ? h("div", { class: `lane-command command-${command.state}`, text: commandLine(command) })
      : null;

    let actions = null;
    let refused = null;
    if (canAct() && last && decision && !decision.open && last.type === "plate" && !state.booth.answered.has(last.id)) {
      // The car the gate kept out: what the booth can do for it.
      refused = h("div", { class: "lane-refused", "data-role": "refused-actions" },
        h("button", { class: "btn btn-small btn-open", type: "button", disabled: !online, "data-action": "open-for-read", onclick: () => openForRead(last) },
          h("span", { text: t("booth.open_for_car") })),
        h("button", { class: "btn btn-small", type: "button", "data-action": "correct", onclick: () => correctRead(last) },
          h("span", { text: t("booth.correct") })),
        isNoPlate(last) ? null : h("button", { class: "btn btn-small", type: "button", "data-action": "add-to-list", onclick: () => addToList(last) },
          h("span", { text: t("booth.add_to_list") })));
    }
    if (canAct()) {
      actions = h("div", { class: "lane-actions" },
        h("button", {
          class: "btn btn-open", type: "button", disabled: !online, "data-action": "open",
          title: online ? null : t(known ? "error.offline" : "live.unreachable"), onclick: () => openBarrier(camera),
        }, icon("gate"), h("span", { text: t("lane.open_barrier") })),
        h("div", { class: "lane-actions-small" },
          camera.can && camera.can.snapshot === false
            ? null
            : h("button", { class: "btn", type: "button", disabled: !online, "data-action": "snapshot", onclick: () => takeSnapshot(camera) },
              icon("camera"), h("span", { text: t("lane.snapshot") })),
          h("button", { class: "btn", type: "button", disabled: !online, "data-action": "display", onclick: () => displayTest(camera) },
            icon("display"), h("span", { text: t("lane.display_test") })),
          // What else this camera can carry out (its capability table).
          ...BARRIER_COMMANDS.filter(([capability]) => !camera.can || camera.can[capability]).map(([capability, action, label, iconName]) =>
            h("button", { class: "btn", type: "button", disabled: !online, "data-action": action, title: t(label), onclick: () => barrierCommand(camera, action, label) },
              icon(iconName), h("span", { text: t(label) }))),
          camera.lane ? h("button", { class: "btn", type: "button", disabled: !online, "data-action": "manual-entry", onclick: () => manualEntry(camera) },
            icon("plus"), h("span", { text: t("booth.manual_entry") })) : null));
    }

    const foot = [];
    foot.push(h("span", { class: "mono", text: camera.serialno }));
    if (camera.ipaddr || camera.address) foot.push(h("span", { text: camera.ipaddr || camera.address }));
    if (camera.queued_commands) foot.push(h("span", { text: tn("lane.queued", camera.queued_commands, { count: camera.queued_commands }) }));
    const sync = camera.whitelist_sync;
    if (sync && sync.syncable === false) {
      foot.push(h("span", { class: "sync-partial", "data-role": "sync-unsupported", text: t("lane.sync_unsupported") }));
    } else if (sync) {
      if (sync.kept_over && sync.kept_over.length === 1 && sync.kept_over[0] === "plate") {
        foot.push(h("span", { class: "sync-partial", "data-role": "sync-plate-replies", text: t("lane.sync_plate_replies") }));
      }
      foot.push(h("span", {
        class: sync.in_sync ? "sync-ok" : "sync-pending",
        text: sync.in_sync
          ? t("lane.sync_in_sync", { plates: sync.plates })
          : t("lane.sync_pending", { plates: sync.plates, adds: sync.pending_adds, deletes: sync.pending_deletes }),
      }));
      if (sync.in_sync) {
        foot.push(h("span", {
          class: "sync-ok",
          "data-role": sync.verified ? "sync-verified" : "sync-assumed",
          text: t(sync.verified ? "lane.sync_verified" : "lane.sync_assumed"),
        }));
      }
      if (sync.partial) {
        // The camera's own list is smaller than the lane's part of the site list.
        foot.push(h("span", {
          class: "sync-partial",
          "data-role": "sync-partial",
          text: t("lane.sync_partial", { capacity: sync.capacity, lane_plates: sync.lane_plates }),
        }));
      }
    }

    // What the installer should change about the camera, said once, plainly.
    const advice = camera.advice
      ? h("p", { class: "lane-advice", "data-role": "camera-advice", text: t("lane.advice_" + camera.advice) })
      : null;

    if (refused) classes.push("has-refused");
    return h("article", { class: classes.join(" "), dataset: { key, camera: camera.serialno } },
      h("header", { class: "lane-head" }, title, online_line),
      advice,
      plateBlock,
      full,
      commandBlock,
      refused,
      actions,
      h("footer", { class: "lane-foot" }, foot));
  }

  function brokenImage(event) {
    const img = event.target;
    const holder = img.parentElement;
    img.remove();
    if (holder && !holder.querySelector(".no-image")) holder.append(h("span", { class: "no-image", text: t("image.missing") }));
  }

  function commandLine(command) {
    const type = has(`command.type.${command.type}`) ? t(`command.type.${command.type}`) : command.type;
    const stateText = has(`command.${command.state}`) ? t(`command.${command.state}`) : command.state;
    return t("command.line", { type, state: stateText });
  }

  function renderLive() {
    const list = $("live-list");
    clear(list);
    $("live-empty").hidden = state.live.length > 0;
    for (const summary of state.live) {
      const decision = summary.decision;
      list.append(h("li", { class: `live-item ${decision ? (decision.open ? "is-open" : "is-denied") : ""}` },
        h("button", { class: "live-button", type: "button", onclick: () => showEvent(summary) },
          hasImage(summary, "crop")
            ? h("img", { class: "live-crop", src: imageUrl(summary, "crop"), alt: "", loading: "lazy", onerror: brokenImage })
            : h("span", { class: "live-crop live-crop-none" }),
          h("span", { class: "live-main" },
            plateChip(plateText(summary), "medium"),
            h("span", { class: "live-meta" },
              h("span", { text: fmtClock(summary.received_at) }),
              h("span", { text: laneOfEvent(summary) }),
              decision && decision.reason ? h("span", { text: reasonText(decision.reason) }) : null)),
          decisionBadge(decision, "small"))));
    }
  }

  function tickTimes() {
    for (const node of document.querySelectorAll("[data-ago]")) {
      const ago = fmtAgo(/^\d+(\.\d+)?$/.test(node.dataset.ago) ? Number(node.dataset.ago) : node.dataset.ago);
      node.textContent = ` · ${node.dataset.agoKey ? t(node.dataset.agoKey, { ago }) : ago}`;
    }
  }

  // --------------------------------------------------------------- commands

  async function openBarrier(camera) {
    const lane = laneLabel(camera);
    // Every open by hand says why: the event it becomes names the operator.
    const data = await formDialog({
      title: t("lane.confirm_open_title"),
      text: t("lane.confirm_open_text", { lane }),
      ok: t("lane.confirm_open"),
      fields: openReasonFields(),
      submit: (values) => api("POST", `/api/cameras/${encodeURIComponent(camera.serialno)}/open`, { json: reasonBody(values) }),
    });
    if (!data) return;
    followCommand(camera.serialno, data.command);
    toast(t("lane.opened", { lane }), "ok");
  }

  function followCommand(serialno, command) {
    if (!command) return;
    const key = cameraKey(serialno);
    const known = state.commands.get(key);
    // The stream may have told the outcome before this answer came.
    if (!known || known.id !== command.id) state.commands.set(key, command);
    const camera = cameraBySerial(serialno);
    if (camera) renderCard(camera);
  }

  // [capability, URL action, label key, icon]: on the card when the camera can.
  const BARRIER_COMMANDS = [
    ["hold_open", "hold-open", "lane.hold_open", "gate"],
    ["close", "close", "lane.close", "barrier_down"],
    ["trigger", "trigger", "lane.trigger", "camera"],
  ];

  async function barrierCommand(camera, action, label) {
    const lane = laneLabel(camera);
    if (action !== "trigger") {
      const yes = await confirmDialog({
        title: t(`${label}_title`),
        text: t(`${label}_text`, { lane }),
        ok: t(`${label}_ok`),
        kind: action === "close" ? "danger" : "open",
      });
      if (!yes) return;
    }
    try {
      const data = await api("POST", `/api/cameras/${encodeURIComponent(camera.serialno)}/${action}`, { json: {} });
      if (data && data.command) {
        const key = cameraKey(camera.serialno);
        const known = state.commands.get(key);
        if (!known || known.id !== data.command.id) state.commands.set(key, data.command);
        renderCard(camera);
      }
      toast(t("lane.command_sent", { command: t(label), lane }), "ok");
    } catch (error) {
      failed(t(label), error);
    }
  }

  async function takeSnapshot(camera) {
    const title = t("snapshot.title", { lane: laneLabel(camera) });
    openImage(title, null);
    try {
      const response = await api("POST", `/api/cameras/${encodeURIComponent(camera.serialno)}/snapshot`, { raw: true, accept: "image/jpeg", json: {} });
      const blob = await response.blob();
      if (!$("image-dialog").open) return; // closed while waiting
      const url = URL.createObjectURL(blob);
      showImageUrl(url, true);
      const save = $("image-save");
      save.href = url;
      const now = new Date();
      save.download = `snapshot-${camera.serialno}-${siteClock(now).compact}.jpg`;
      save.hidden = false;
    } catch (error) {
      closeImage();
      failed(t("lane.snapshot"), error);
    }
  }

  async function displayTest(camera) {
    const dialog = $("display-dialog");
    const lane = laneLabel(camera);
    $("display-title").textContent = t("display.title", { lane });
    const input = $("display-text");
    if (!input.value) input.value = t("display.default");
    dialog.returnValue = "";
    dialog.showModal();
    input.select();
    const answer = await new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true }));
    const text = input.value.trim();
    if (answer !== "ok" || !text) return;
    try {
      const data = await api("POST", `/api/cameras/${encodeURIComponent(camera.serialno)}/display`, { json: { text } });
      if (data && data.command) {
        // Sent through the camera (its voice): the card follows the command.
        const key = cameraKey(camera.serialno);
        const known = state.commands.get(key);
        if (!known || known.id !== data.command.id) state.commands.set(key, data.command);
        renderCard(camera);
      }
      toast(t("display.sent", { lane }), "ok");
    } catch (error) {
      failed(t("lane.display_test"), error);
    }
  }

  // ---------------------------------------------------------------- dialogs

  function confirmDialog({ title, text, ok, kind }) {
    const dialog = $("confirm-dialog");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    const button = $("confirm-ok");
    button.textContent = ok;
    button.className = `btn btn-large ${kind === "danger" ? "btn-danger" : "btn-open"}`;
    dialog.returnValue = "";
    dialog.showModal();
    button.focus();
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    });
  }

  function openImage(title, url) {
    const dialog = $("image-dialog");
    $("image-title").textContent = title;
    $("image-save").hidden = true;
    showImageUrl(url, false);
    if (!dialog.open) dialog.showModal();
  }

  function showImageUrl(url, isBlob) {
    const img = $("image-large");
    if (state.imageUrl) {
      URL.revokeObjectURL(state.imageUrl);
      state.imageUrl = null;
    }
    $("image-waiting").hidden = !!url;
    img.hidden = !url;
    if (url) {
      img.src = url;
      img.alt = $("image-title").textContent;
      if (isBlob) state.imageUrl = url;
    } else {
      img.removeAttribute("src");
    }
  }

  function closeImage() {
    const dialog = $("image-dialog");
    if (dialog.open) dialog.close();
  }

  function closeDialogs() {
    for (const dialog of document.querySelectorAll("dialog")) {
      if (dialog.open) dialog.close("cancel");
    }
  }

  // ----------------------------------------------------------------- events

  function fillFilterOptions() {
    const form = $("events-form");
    const lanes = [...new Set(state.cameras.map((camera) => camera.lane).filter(Boolean))];
    const options = {
      lanes: [["", t("common.any")], ...lanes.map((lane) => [lane, lane])],
      cameras: [["", t("common.any")], ...state.cameras.map((camera) => [camera.serialno, camera.lane ? `${camera.serialno} (${camera.lane})` : camera.serialno])],
      types: [["", t("common.any")], ...EVENT_TYPES.map((type) => [type, t(`events.type.${type}`)])],
      decisions: [["", t("common.any")], ["true", t("events.open")], ["false", t("events.denied")]],
      reasons: [["", t("common.any")], ...REASONS.map((reason) => [reason, reasonText(reason)])],
    };
    for (const select of form.querySelectorAll("select[data-options]")) {
      const chosen = select.value || (select.dataset.options === "types" && !state.events.loaded ? "plate" : "");
      clear(select);
      for (const [value, label] of options[select.dataset.options]) select.append(h("option", { value, text: label }));
      if ([...select.options].some((option) => option.value === chosen)) select.value = chosen;
    }
    renderEntryLanes();
  }

  function eventQuery() {
    const form = $("events-form");
    const data = new FormData(form);
    const query = {};
    for (const name of ["plate", "lane", "camera", "type", "open", "reason"]) {
      const value = String(data.get(name) || "").trim();
      if (value) query[name] = value;
    }
    for (const name of ["since", "until"]) {
      const value = String(data.get(name) || "");
      const date = value ? new Date(value) : null; // the input's value is local time
      if (date && !isNaN(date.getTime())) query[name] = date.toISOString();
    }
    return query;
  }

  function matchesQuery(summary) {
    const query = state.events.query || {};
    const decision = summary.decision;
    if (query.plate && !plateText(summary).toUpperCase().includes(query.plate.toUpperCase())) return false;
    if (query.lane && summary.lane !== query.lane) return false;
    if (query.camera && cameraKey(summary.camera) !== cameraKey(query.camera)) return false;
    if (query.type && summary.type !== query.type) return false;
    if (query.open && (!decision || String(decision.open) !== query.open)) return false;
    if (query.reason && (!decision || decision.reason !== query.reason)) return false;
    if (query.until) return false; // a bounded search shows the past only
    return true;
  }

  async function searchEvents(more) {
    if (more && state.events.loading) return;
    // The latest search wins: an answer to an older one is dropped.
    const token = ++state.events.token;
    state.events.loading = true;
    const query = more ? state.events.query : eventQuery();
    const params = new URLSearchParams(query);
    params.set("limit", String(EVENTS_PAGE));
    if (more && state.events.nextBefore !== null) params.set("before", String(state.events.nextBefore));
    try {
      const data = await api("GET", `/api/events?${params}`);
      if (token !== state.events.token) return;
      state.events.query = query;
      state.events.rows = more ? [...state.events.rows, ...data.events] : data.events;
      state.events.nextBefore = data.next_before === undefined ? null : data.next_before;
      state.events.loaded = true;
      renderEvents();
    } catch (error) {
      if (token === state.events.token) failed(t("events.search"), error);
    } finally {
      if (token === state.events.token) state.events.loading = false;
    }
  }

  function renderEvents() {
    const body = $("events-rows");
    clear(body);
    const rows = state.events.rows;
    for (const summary of rows) {
      const decision = summary.decision;
      const typeText = has(`events.type.${summary.type}`) ? t(`events.type.${summary.type}`) : summary.type;
      body.append(h("tr", { class: `event-row ${decision ? (decision.open ? "is-open" : "is-denied") : ""}`, tabindex: "0", dataset: { id: summary.id },
        onclick: () => showEvent(summary),
        onkeydown: (event) => {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            showEvent(summary);
          }
        } },
      h("td", { dataset: { label: t("events.time") }, text: fmtDateTime(summary.received_at) }),
      h("td", { dataset: { label: t("events.lane") }, text: laneOfEvent(summary) }),
      h("td", { dataset: { label: t("events.plate") } }, summary.type === "plate" ? plateChip(plateText(summary), "medium") : t("common.none")),
      h("td", { dataset: { label: t("events.decision") } }, summary.type === "plate" ? decisionBadge(decision, "small") : null,
        decision && decision.reason ? h("span", { class: "reason", text: reasonText(decision.reason) }) : null),
      h("td", { dataset: { label: t("events.type") }, text: typeText + (summary.offline ? ` · ${t("events.offline")}` : "") }),
      h("td", { dataset: { label: t("events.image") } }, hasImage(summary, "crop")
        ? h("img", { class: "thumb", src: imageUrl(summary, "crop"), alt: plateText(summary), loading: "lazy", onerror: brokenImage })
        : hasImage(summary, "full")
          ? h("img", { class: "thumb thumb-full", src: imageUrl(summary, "full"), alt: plateText(summary), loading: "lazy", onerror: brokenImage })
          : null)));
    }
    $("events-none").hidden = !state.events.loaded || rows.length > 0;
    $("events-more").hidden = state.events.nextBefore === null || rows.length === 0;
    $("events-count").textContent = state.events.loaded && rows.length ? tn("events.count", rows.length, { count: rows.length }) : "";
  }

  async function showEvent(summary) {
    const dialog = $("event-dialog");
    renderEventDetails(summary);
    if (!dialog.open) dialog.showModal();
    try {
      // The stored record may have changed (an image removed by retention).
      const fresh = await api("GET", `/api/events/${encodeURIComponent(summary.id)}`);
      if (dialog.open && $("event-body").dataset.id === summary.id) renderEventDetails(fresh);
    } catch (error) {
      if (error.status !== 404) failed(t("events.details", { plate: plateText(summary) }), error);
    }
  }

  function renderEventDetails(summary) {
    const body = $("event-body");
    body.dataset.id = summary.id;
    clear(body);
    const decision = summary.decision;
    const plate = plateText(summary);
    $("event-title").textContent = t("events.details", { plate: plate || (has(`events.type.${summary.type}`) ? t(`events.type.${summary.type}`) : summary.type) });
    const images = h("div", { class: "event-images" });
    for (const kind of ["full", "crop"]) {
      if (!hasImage(summary, kind)) continue;
      images.append(h("button", { class: `event-image event-image-${kind}`, type: "button", onclick: () => openImage(plate, imageUrl(summary, kind)) },
        h("img", { src: imageUrl(summary, kind), alt: t(kind === "full" ? "lane.full_image" : "lane.crop_image"), onerror: brokenImage })));
    }
    const rows = [
      [t("events.time"), fmtDateTime(summary.received_at)],
      [t("events.lane"), laneOfEvent(summary)],
      [t("events.camera"), summary.camera],
      [t("events.type"), has(`events.type.${summary.type}`) ? t(`events.type.${summary.type}`) : summary.type],
      [t("events.license"), summary.license || t("common.none")],
      [t("events.camera_time"), fmtDateTime(summary.camera_time)],
      [t("events.source"), decision && decision.source ? t(`source.${decision.source}`) : t("common.none")],
      [t("events.offline"), t(summary.offline ? "common.yes" : "common.no")],
      [t("events.repeat"), t(summary.repeat ? "common.yes" : "common.no")],
      [t("events.id"), summary.id],
      [t("events.seq"), summary.seq],
    ];
    const operator = OPERATOR_TYPES.includes(summary.type) ? (summary.raw || {}).operator : null;
    if (OPERATOR_TYPES.includes(summary.type)) {
      const raw = summary.raw || {};
      rows.splice(3, 0,
        [t("booth.operator"), operator ? operator.name : t("common.none")],
        [t("booth.reason"), raw.reason ? openReasonText(raw.reason) : t("common.none")],
        [t("booth.note"), raw.note || t("common.none")],
        [t("booth.answers"), summary.answers || t("common.none")]);
      if (summary.type === "plate_correction") rows.splice(3, 0, [t("booth.read_plate"), raw.read_plate || t("common.none")]);
    }
    const list = h("dl", { class: "details" });
    for (const [name, value] of rows) list.append(h("dt", { text: name }), h("dd", { text: value === null || value === undefined ? t("common.none") : String(value) }));
    const isRead = summary.type === "plate";
    const actions = isRead && canAct()
      ? h("div", { class: "event-actions", "data-role": "event-actions" },
        h("button", { class: "btn btn-open", type: "button", "data-action": "open-for-read", onclick: () => openForRead(summary) }, icon("gate"), h("span", { text: t("booth.open_for_car") })),
        h("button", { class: "btn", type: "button", "data-action": "correct", onclick: () => correctRead(summary) }, icon("edit"), h("span", { text: t("booth.correct") })),
        isNoPlate(summary) ? null : h("button", { class: "btn", type: "button", "data-action": "add-to-list", onclick: () => addToList(summary) }, icon("plus"), h("span", { text: t("booth.add_to_list") })),
        summary.lane ? h("button", { class: "btn", type: "button", "data-action": "manual-entry", onclick: () => manualEntryFor(summary) }, h("span", { text: t("booth.manual_entry") })) : null)
      : null;
    const answered = isRead ? h("div", { class: "event-answers", "data-role": "event-answers" }) : null;
    body.append(
      h("div", { class: "event-head" },
        isRead || OPERATOR_TYPES.includes(summary.type) ? plateChip(plate, "big") : null,
        isRead || OPERATOR_TYPES.includes(summary.type) ? decisionBadge(decision, "big") : null,
        decision && decision.reason ? h("span", { class: "event-reason", text: isRead ? reasonText(decision.reason) : openReasonText(decision.reason) }) : null,
        operator ? h("span", { class: "event-operator", "data-role": "event-operator", text: t("booth.by", { name: operator.name }) }) : null),
      actions,
      answered,
      images.children.length ? images : null,
      list,
      h("details", { class: "raw" },
        h("summary", { text: t("events.raw") }),
        h("pre", { text: JSON.stringify(summary.raw || {}, null, 2) })));
    if (answered) loadAnswers(summary, answered);
  }

  // ------------------------------------------------------ the refused car

  async function loadBooth() {
    try {
      const data = await api("GET", "/api/booth");
      state.booth.reasons = Array.isArray(data.open_reasons) ? data.open_reasons : [];
    } catch (error) {
      state.booth.reasons = [];
    }
  }

  /** A configured reason in the page's language when it is a known one,
   * else as the installer wrote it. */
  function openReasonText(reason) {
    return has(`open_reason.${reason}`) ? t(`open_reason.${reason}`) : reason;
  }

  function reasonOptions() {
    return [["", t("booth.pick_reason")], ...state.booth.reasons.map((reason) => [reason, openReasonText(reason)])];
  }

  function openReasonFields() {
    return [
      { name: "reason", label: t("booth.reason"), type: "select", options: reasonOptions() },
      { name: "note", label: t("booth.note"), maxlength: 500, hint: t("booth.note_hint") },
    ];
  }

  /** The body of an open: the reason and the note, both asked for. */
  function reasonBody(values) {
    const missing = {};
    if (!values.reason) missing.reason = t("booth.required");
    if (!String(values.note || "").trim()) missing.note = t("booth.required");
    if (Object.keys(missing).length) {
      throw new ApiError(400, t("booth.reason_needed"), { errors: missing }, null);
    }
    return { reason: values.reason, note: String(values.note).trim() };
  }

  function isNoPlate(summary) {
    return !summary.plate || (!!summary.decision && summary.decision.reason === "no_plate");
  }

  function readLine(summary) {
    return t("booth.read_line", { plate: plateText(summary) || t("common.none"), lane: laneOfEvent(summary), time: fmtClock(summary.received_at) });
  }

  async function openForRead(summary) {
    const data = await formDialog({
      title: t("booth.open_title", { plate: plateText(summary) || t("common.none") }),
      text: readLine(summary),
      ok: t("lane.confirm_open"),
      fields: openReasonFields(),
      submit: (values) => api("POST", `/api/events/${encodeURIComponent(summary.id)}/open`, { json: reasonBody(values) }),
    });
    if (!data) return;
    if (summary.camera) followCommand(summary.camera, data.command);
    toast(t("booth.opened", { lane: laneOfEvent(summary) }), "ok");
    refreshEventDialog(summary);
  }

  async function correctRead(summary) {
    const data = await formDialog({
      title: t("booth.correct_title"),
      text: readLine(summary),
      ok: t("booth.correct_save"),
      fields: [
        { name: "plate", label: t("booth.right_plate"), value: summary.plate || "", maxlength: 32 },
        { name: "decide", label: t("booth.decide_again"), type: "checkbox", value: true, hint: t("booth.decide_hint") },
        { name: "note", label: t("booth.note"), maxlength: 500 },
      ],
      submit: (values) => api("POST", `/api/events/${encodeURIComponent(summary.id)}/correct`, {
        json: { plate: values.plate.trim(), decide: !!values.decide, note: values.note.trim() },
      }),
    });
    if (!data) return;
    const fixed = data.event || {};
    const decided = fixed.decision;
    if (summary.camera && data.command) followCommand(summary.camera, data.command);
    toast(decided
      ? t(decided.open ? "booth.corrected_open" : "booth.corrected_denied", { plate: fixed.plate, reason: reasonText(decided.reason) })
      : t("booth.corrected", { plate: fixed.plate }), decided && !decided.open ? "error" : "ok");
    refreshEventDialog(summary);
  }

  function addToList(summary) {
    const when = toDate(summary.received_at) || new Date();
    const lane = summary.lane;
    openEntryDialog(null, {
      eventId: summary.id,
      plate: summary.plate || "",
      day: siteClock(when).date,
      lanes: lane ? [lane] : [],
      note: t("booth.list_note", { lane: laneOfEvent(summary), time: fmtDateTime(summary.received_at) }),
    });
  }

  function manualEntryFor(summary) {
    const camera = cameraBySerial(summary.camera) || { serialno: summary.camera, lane: summary.lane };
    manualEntry(camera, summary);
  }

  async function manualEntry(camera, read) {
    const lane = camera.lane;
    if (!lane) return;
    // The lane's last read answers it when no plate was read there.
    const last = read || camera.last_plate;
    const answers = read || (last && last.type === "plate" && last.lane === lane && isNoPlate(last) ? last : null);
    const data = await formDialog({
      title: t("booth.manual_title", { lane }),
      text: t("booth.manual_text"),
      ok: t("booth.manual_save"),
      fields: [
        { name: "plate", label: t("booth.typed_plate"), maxlength: 32, value: read && !isNoPlate(read) ? read.plate : "" },
        ...openReasonFields().map((field) => field.name === "note" ? { ...field, hint: null } : field),
        { name: "open", label: t("booth.manual_open"), type: "checkbox", value: true },
      ],
      submit: (values) => {
        const missing = {};
        if (!values.plate.trim()) missing.plate = t("booth.required");
        if (!values.reason) missing.reason = t("booth.required");
        if (Object.keys(missing).length) throw new ApiError(400, t("booth.reason_needed"), { errors: missing }, null);
        const json = { plate: values.plate.trim(), reason: values.reason, note: values.note.trim(), open: !!values.open };
        if (answers) json.event_id = answers.id;
        return api("POST", `/api/lanes/${encodeURIComponent(lane)}/manual-entry`, { json });
      },
    });
    if (!data) return;
    if (data.command) followCommand(camera.serialno, data.command);
    toast(t("booth.manual_done", { plate: (data.event && data.event.plate) || "", lane }), "ok");
    if (read) refreshEventDialog(read);
  }

  function refreshEventDialog(summary) {
    const dialog = $("event-dialog");
    if (dialog.open && $("event-body").dataset.id === summary.id) {
      const box = $("event-body").querySelector("[data-role=event-answers]");
      if (box) loadAnswers(summary, box);
    }
  }

  async function loadAnswers(summary, box) {
    try {
      const data = await api("GET", `/api/events/${encodeURIComponent(summary.id)}/answers`);
      if ($("event-body").dataset.id !== summary.id) return;
      clear(box);
      const answers = data.events || [];
      if (!answers.length) return;
      box.append(h("h3", { text: t("booth.answered_by") }));
      const list = h("ul", { class: "answers-list" });
      for (const answer of answers) list.append(h("li", { dataset: { type: answer.type } }, answerLine(answer)));
      box.append(list);
    } catch (error) {
      if (error.status !== 404) failed(t("booth.answered_by"), error);
    }
  }

  /** One line for what an operator did: when, who, what, why. */
  function answerLine(summary) {
    const raw = summary.raw || {};
    const who = raw.operator ? raw.operator.name : t("common.none");
    const what = t(`events.type.${summary.type}`);
    const parts = [fmtClock(summary.received_at), who, what];
    if (summary.type === "plate_correction") {
      parts.push(summary.plate);
      if (summary.decision) parts.push(t(summary.decision.open ? "decision.open" : "decision.denied"), reasonText(summary.decision.reason));
    } else if (summary.type === "manual_entry") {
      parts.push(summary.plate);
    }
    if (raw.reason && summary.type !== "plate_correction") parts.push(openReasonText(raw.reason));
    if (raw.note) parts.push(`“${raw.note}”`);
    return parts.filter(Boolean).join(" · ");
  }

  function onOperatorEvent(summary) {
    if (summary.answers) {
      state.booth.answered.add(summary.answers);
      const camera = cameraBySerial(summary.camera);
      if (camera && camera.last_plate && camera.last_plate.id === summary.answers) renderCard(camera);
    }
    if (state.view === "events" && state.events.loaded && matchesQuery(summary)) {
      state.events.rows = [summary, ...state.events.rows.filter((row) => row.id !== summary.id)];
      renderEvents();
    }
    if (summary.answers) {
      const dialog = $("event-dialog");
      if (dialog.open && $("event-body").dataset.id === summary.answers) refreshEventDialog({ id: summary.answers });
    }
    if (state.view === "reports" && state.booth.handover) loadHandover();
  }

  // ---------------------------------------------------------------- reports

  function todayAtSite() {
    return siteClock(new Date()).date;
  }

  function showReports() {
    const day = $("report-date");
    if (!day.value) day.value = todayAtSite();
    const since = $("handover-since");
    if (!since.value) {
      // The shift so far: from 8 hours ago, in site time.
      const start = siteClock(new Date(Date.now() - 8 * 3600 * 1000));
      since.value = `${start.date}T${start.clock.slice(0, 5)}`;
    }
    updateExportLink();
    loadReport();
  }

  function updateExportLink() {
    const day = $("report-date").value || todayAtSite();
    const link = $("report-export");
    link.href = `/api/events.csv?from=${encodeURIComponent(day)}&to=${encodeURIComponent(day)}`;
    link.download = `events-${day}.csv`;
  }

  async function loadReport() {
    const day = $("report-date").value || todayAtSite();
    try {
      state.booth.report = await api("GET", `/api/reports/daily?date=${encodeURIComponent(day)}`);
    } catch (error) {
      state.booth.report = null;
      failed(t("reports.daily"), error);
    }
    renderReport();
  }

  const REPORT_COLUMNS = ["entries", "exits", "refused_total", "manual_opens", "corrections", "manual_entries"];

  function reportTable(report, id) {
    const table = h("table", { class: "table responsive report-table", id });
    table.append(h("thead", null, h("tr", null,
      h("th", { text: t("events.lane") }),
      ...REPORT_COLUMNS.map((name) => h("th", { text: t(`reports.${name}`) })),
      h("th", { text: t("reports.refused_by_reason") }))));
    const body = h("tbody");
    const rows = [...report.lanes, { ...report.totals, lane: t("reports.total"), total: true }];
    for (const row of rows) {
      const refused = Object.entries(row.refused || {}).map(([reason, count]) => `${reasonText(reason)} ${count}`).join(", ");
      body.append(h("tr", { class: row.total ? "report-total" : "", dataset: { lane: row.total ? "" : row.lane || "" } },
        h("td", { dataset: { label: t("events.lane") }, text: row.lane || t("lane.no_lane") }),
        ...REPORT_COLUMNS.map((name) => h("td", { class: "num", dataset: { label: t(`reports.${name}`), column: name }, text: fmtNumber(row[name] || 0) })),
        h("td", { dataset: { label: t("reports.refused_by_reason") }, text: refused || "–" })));
    }
    table.append(body);
    return table;
  }

  function renderReport() {
    const box = $("report-body");
    if (!box) return;
    clear(box);
    const report = state.booth.report;
    if (!report) return;
    box.append(h("p", { class: "muted", text: t("reports.daily_of", { date: report.date, zone: report.timezone }) }), reportTable(report, "report-table"));
  }

  async function loadHandover() {
    const since = $("handover-since").value;
    if (!since) return;
    try {
      // A time typed here is the site's: the gateway reads it so.
      state.booth.handover = await api("GET", `/api/reports/handover?since=${encodeURIComponent(since)}`);
    } catch (error) {
      state.booth.handover = null;
      failed(t("reports.handover"), error);
    }
    renderHandover();
  }

  function renderHandover() {
    const box = $("handover-body");
    if (!box) return;
    clear(box);
    const report = state.booth.handover;
    $("handover-print").hidden = !report;
    if (!report) return;
    box.append(
      h("h3", { class: "print-only", text: t("reports.handover") }),
      h("p", { class: "muted", "data-role": "handover-range", text: t("reports.handover_range", { since: fmtDateTime(report.since), until: fmtDateTime(report.until), by: report.by }) }),
      reportTable(report, "handover-table"));
    const actions = report.actions || [];
    box.append(h("h3", { text: t("reports.manual_actions") }));
    if (!actions.length) {
      box.append(h("p", { class: "muted", text: t("reports.no_actions") }));
      return;
    }
    const table = h("table", { class: "table responsive table-compact", id: "handover-actions" },
      h("thead", null, h("tr", null,
        ...["time", "lane", "what", "plate", "operator", "reason", "note"].map((name) => h("th", { text: t(`reports.col_${name}`) })))));
    const body = h("tbody");
    for (const action of actions) {
      const raw = action.raw || {};
      body.append(h("tr", { dataset: { type: action.type } },
        h("td", { dataset: { label: t("reports.col_time") }, text: fmtDateTime(action.received_at) }),
        h("td", { dataset: { label: t("reports.col_lane") }, text: laneOfEvent(action) }),
        h("td", { dataset: { label: t("reports.col_what") }, text: t(`events.type.${action.type}`) }),
        h("td", { dataset: { label: t("reports.col_plate") }, text: action.plate || "–" }),
        h("td", { dataset: { label: t("reports.col_operator") }, text: raw.operator ? raw.operator.name : "–" }),
        h("td", { dataset: { label: t("reports.col_reason") }, text: raw.reason ? openReasonText(raw.reason) : "–" }),
        h("td", { dataset: { label: t("reports.col_note") }, text: raw.note || "–" })));
    }
    table.append(body);
    box.append(table);
    if (report.actions_truncated) box.append(h("p", { class: "muted", text: t("reports.truncated") }));
  }

  // -------------------------------------------------------------- whitelist

  async function loadWhitelist() {
    const wl = state.whitelist;
    const params = new URLSearchParams({ limit: String(WHITELIST_PAGE), offset: String(wl.offset) });
    if (wl.q) params.set("q", wl.q);
    const token = ++wl.token;
    try {
      const data = await api("GET", `/api/whitelist?${params}`);
      if (token !== wl.token) return; // a newer search or page was asked for
      wl.entries = data.entries || [];
      wl.total = data.total || 0;
      wl.loaded = true;
      if (wl.entries.length === 0 && wl.offset > 0 && wl.total > 0) {
        wl.offset = Math.max(0, wl.offset - WHITELIST_PAGE);
        loadWhitelist();
        return;
      }
      renderWhitelist();
    } catch (error) {
      failed(t("whitelist.title"), error);
    }
  }

  function renderWhitelist() {
    const wl = state.whitelist;
    const body = $("whitelist-rows");
    clear(body);
    for (const entry of wl.entries) {
      const stateBadge = entry.blacklist
        ? h("span", { class: "badge badge-denied badge-small", text: t("whitelist.blacklist") })
        : h("span", { class: "badge badge-open badge-small", text: t("whitelist.allowed") });
      const valid = entry.valid_from || entry.valid_until
        ? `${entry.valid_from ? fmtSiteTime(entry.valid_from, false) : "…"} → ${entry.valid_until ? fmtSiteTime(entry.valid_until, true) : "…"}`
        : t("whitelist.open_ended");
      body.append(h("tr", { class: `entry-row${entry.enabled ? "" : " is-disabled"}${entry.blacklist ? " is-blacklist" : ""}`, dataset: { plate: entry.plate } },
        h("td", { dataset: { label: t("whitelist.plate") } }, plateChip(entry.plate, "medium")),
        h("td", { dataset: { label: t("whitelist.state") } }, stateBadge,
          entry.enabled ? null : h("span", { class: "tag", text: t("whitelist.disabled") })),
        h("td", { class: "nowrap", dataset: { label: t("whitelist.valid") }, text: valid }),
        h("td", { dataset: { label: t("whitelist.lanes") }, text: entry.lanes && entry.lanes.length ? entry.lanes.join(", ") : t("whitelist.all_lanes") }),
        h("td", { dataset: { label: t("whitelist.hours") }, text: entry.hours || t("whitelist.any_time") }),
        h("td", { class: "note", dataset: { label: t("whitelist.note") }, text: entry.note || "" }),
        h("td", { class: "nowrap", dataset: { label: t("whitelist.source") }, text: has(`whitelist.source.${entry.source}`) ? t(`whitelist.source.${entry.source}`) : entry.source || "" }),
        canAct() ? h("td", { class: "row-actions needs-edit", dataset: { label: t("whitelist.actions") } },
          h("button", { class: "btn btn-small", type: "button", "data-action": "edit", onclick: () => editEntry(entry) }, icon("edit"), h("span", { text: t("whitelist.edit") })),
          h("button", { class: "btn btn-small btn-danger-ghost", type: "button", "data-action": "delete", onclick: () => deleteEntry(entry) }, icon("trash"), h("span", { text: t("whitelist.delete") })))
          : null));
    }
    $("whitelist-none").hidden = !wl.loaded || wl.entries.length > 0;
    const first = wl.entries.length ? wl.offset + 1 : 0;
    const last = wl.offset + wl.entries.length;
    $("whitelist-range").textContent = wl.loaded ? (wl.total > WHITELIST_PAGE || wl.offset > 0
      ? t("whitelist.range", { first, last, total: wl.total })
      : tn("whitelist.total", wl.total, { total: wl.total })) : "";
    $("whitelist-prev").hidden = wl.offset === 0;
    $("whitelist-next").hidden = last >= wl.total;
  }

  /* Whitelist times are the site's wall-clock time, as the gateway writes
   * them (ISO with the site's offset) and reads them back (no offset: site
   * time), whatever the time zone of the browser. A date alone means the
   * start of that day (valid from) or its end (valid until). */
  function siteParts(iso, until) {
    const match = /^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2})(?::(\d{2}))?)?/.exec(iso || "");
    if (!match) return { date: "", time: "" };
    let time = match[2] || "";
    const seconds = match[3] || "00";
    if (until ? time === "23:59" && seconds === "59" : time === "00:00" && seconds === "00") time = "";
    return { date: match[1], time };
  }

  function fmtSiteTime(iso, until) {
    const parts = siteParts(iso, until);
    return parts.time ? `${parts.date} ${parts.time}` : parts.date;
  }

  function renderEntryLanes(selected) {
    const box = $("entry-lanes");
    const chosen = selected || [...box.querySelectorAll("input:checked")].map((input) => input.value);
    const names = [...new Set([...state.cameras.map((camera) => camera.lane).filter(Boolean), ...chosen])];
    clear(box);
    for (const name of names) {
      box.append(h("label", { class: "check" },
        h("input", { type: "checkbox", name: "lanes", value: name, checked: chosen.includes(name) }),
        h("span", { text: name })));
    }
  }

  function openEntryDialog(entry, prefill) {
    const form = $("entry-form");
    state.whitelist.editing = entry ? entry.plate : null;
    state.whitelist.forEvent = prefill ? prefill.eventId : null;
    form.reset();
    clearEntryErrors();
    $("entry-title").textContent = entry ? t("whitelist.title_edit", { plate: entry.plate }) : t("whitelist.title_add");
    form.elements.plate.value = entry ? entry.plate : "";
    form.elements.plate.readOnly = !!entry; // a new plate is a new entry
    form.elements.enabled.checked = entry ? !!entry.enabled : true;
    form.elements.blacklist.checked = entry ? !!entry.blacklist : false;
    for (const name of ["valid_from", "valid_until"]) {
      const parts = siteParts(entry ? entry[name] : null, name === "valid_until");
      form.elements[`${name}_date`].value = parts.date;
      form.elements[`${name}_time`].value = parts.time;
    }
    form.elements.hours.value = entry ? entry.hours || "" : "";
    form.elements.note.value = entry ? entry.note || "" : "";
    renderEntryLanes(entry ? entry.lanes || [] : []);
    if (prefill) {
      // From a read: its plate, for that lane, valid from its day to the end of it.
      form.elements.plate.value = prefill.plate;
      form.elements.valid_from_date.value = prefill.day;
      form.elements.valid_until_date.value = prefill.day;
      form.elements.note.value = prefill.note;
      renderEntryLanes(prefill.lanes);
    }
    const dialog = $("entry-dialog");
    dialog.showModal();
    (entry ? form.elements.valid_until_date : form.elements.plate).focus();
  }

  function editEntry(entry) {
    openEntryDialog(entry);
  }

  function clearEntryErrors() {
    const form = $("entry-form");
    for (const slot of form.querySelectorAll("[data-error-for]")) slot.textContent = "";
    for (const field of form.querySelectorAll(".has-error")) field.classList.remove("has-error");
    $("entry-message").hidden = true;
  }

  function showEntryErrors(error) {
    const form = $("entry-form");
    const errors = (error.data && error.data.errors) || {};
    let shown = 0;
    for (const [name, reason] of Object.entries(errors)) {
      if (markField(name, reason)) shown += 1;
    }
    const message = $("entry-message");
    message.textContent = shown ? t("whitelist.check_fields") : errorText(error);
    message.className = "form-message form-error";
    message.hidden = false;
    const first = form.querySelector(".has-error input");
    if (first) first.focus();
  }

  function markField(name, reason) {
    const slot = $("entry-form").querySelector(`[data-error-for="${CSS.escape(name)}"]`);
    if (!slot) return false;
    slot.textContent = reason;
    slot.closest(".field").classList.add("has-error");
    return true;
  }

  function siteTimeInput(form, name) {
    const date = form.elements[`${name}_date`].value;
    const time = form.elements[`${name}_time`].value;
    if (!date) return time ? undefined : null;
    return time ? `${date}T${time}` : date;
  }

  async function saveEntry(event) {
    event.preventDefault();
    const form = $("entry-form");
    clearEntryErrors();
    const validFrom = siteTimeInput(form, "valid_from");
    const validUntil = siteTimeInput(form, "valid_until");
    if (validFrom === undefined || validUntil === undefined) {
      if (validFrom === undefined) markField("valid_from", t("whitelist.date_needed"));
      if (validUntil === undefined) markField("valid_until", t("whitelist.date_needed"));
      showEntryErrors({ data: null, message: t("whitelist.check_fields") });
      return;
    }
    const entry = {
      plate: form.elements.plate.value.trim(),
      enabled: form.elements.enabled.checked,
      blacklist: form.elements.blacklist.checked,
      valid_from: validFrom,
      valid_until: validUntil,
      lanes: [...form.querySelectorAll("input[name=lanes]:checked")].map((input) => input.value),
      hours: form.elements.hours.value.trim(),
      note: form.elements.note.value.trim(),
    };
    const editing = state.whitelist.editing;
    try {
      const saved = editing
        ? await api("PUT", `/api/whitelist/${encodeURIComponent(editing)}`, { json: entry })
        : await api("POST", state.whitelist.forEvent ? `/api/whitelist?event=${encodeURIComponent(state.whitelist.forEvent)}` : "/api/whitelist", { json: entry });
      $("entry-dialog").close();
      toast(t("whitelist.saved", { plate: (saved && saved.plate) || entry.plate }), "ok");
      state.whitelist.forEvent = null;
      if (state.view === "whitelist") loadWhitelist();
    } catch (error) {
      if (error.status === 401) return;
      if (error.status === 400 || error.status === 409 || error.status === 404) showEntryErrors(error);
      else failed(t("whitelist.save"), error);
    }
  }

  async function deleteEntry(entry) {
    const yes = await confirmDialog({
      title: t("whitelist.confirm_delete_title"),
      text: t("whitelist.confirm_delete", { plate: entry.plate }),
      ok: t("whitelist.delete"),
      kind: "danger",
    });
    if (!yes) return;
    try {
      await api("DELETE", `/api/whitelist/${encodeURIComponent(entry.plate)}`);
      toast(t("whitelist.deleted", { plate: entry.plate }), "ok");
    } catch (error) {
      if (error.status !== 404) failed(t("whitelist.delete"), error);
    }
    loadWhitelist();
  }

  async function importCsv() {
    const input = $("whitelist-file");
    const file = input.files && input.files[0];
    if (!file) {
      toast(t("error.file"), "error");
      return;
    }
    try {
      const result = await api("POST", "/api/whitelist/import", { body: file, contentType: "text/csv" });
      renderImport(result);
      loadWhitelist();
    } catch (error) {
      failed(t("whitelist.import"), error);
    } finally {
      input.value = ""; // the same file may be chosen again after a fix
    }
  }

  function renderImport(result) {
    state.whitelist.importResult = result;
    const box = $("import-result");
    if (!result) {
      box.hidden = true;
      return;
    }
    const rejected = result.rejected || [];
    const done = tn("whitelist.import_done", result.accepted, { accepted: result.accepted });
    $("import-summary").textContent = rejected.length
      ? `${done} · ${tn("whitelist.import_rejected", rejected.length, { count: rejected.length })}`
      : done;
    box.classList.toggle("has-rejected", rejected.length > 0);
    const rows = $("import-rows");
    clear(rows);
    for (const row of rejected) {
      rows.append(h("tr", null,
        h("td", { text: row.line === null || row.line === undefined ? t("common.none") : row.line }),
        h("td", { text: row.column || t("common.none") }),
        h("td", { text: row.reason || "" })));
    }
    $("import-rejected").hidden = rejected.length === 0;
    box.hidden = false;
  }

  // ----------------------------------------------------------------- status

  async function loadStatus() {
    const box = $("status-cards");
    box.setAttribute("aria-busy", "true");
    try {
      state.status = await api("GET", "/api/status");
      state.statusAt = new Date();
      renderStatus();
    } catch (error) {
      failed(t("status.title"), error);
    } finally {
      box.setAttribute("aria-busy", "false");
    }
  }

  function startStatusTimer() {
    stopStatusTimer();
    state.statusTimer = window.setInterval(loadStatus, STATUS_REFRESH_MS);
  }

  function stopStatusTimer() {
    if (state.statusTimer) window.clearInterval(state.statusTimer);
    state.statusTimer = null;
  }

  function card(title, stateClass, stateText, rows, extra) {
    // rows: [label, value, class]; an undefined value is left out.
    const list = h("dl", { class: "details" });
    for (const [name, value, cls] of rows) {
      if (value === undefined) continue;
      // A long value (an error message) takes the card's whole width.
      const span = typeof value === "string" && value.length > 24 ? "span" : "";
      list.append(h("dt", { class: span || null, text: name }),
        h("dd", { class: [cls, span].filter(Boolean).join(" ") || null, text: value === null ? t("common.none") : String(value) }));
    }
    return h("section", { class: "status-card" },
      h("h2", { text: title }),
      stateText ? h("div", { class: `status-pill ${stateClass}`, text: stateText }) : null,
      list.children.length ? list : null,
      extra || null);
  }

  // Damaged event rows set aside: how many, and the latest.
  function quarantinedText(quarantined) {
    if (!quarantined || !quarantined.rows) return undefined;
    const latest = quarantined.latest;
    const text = t("status.quarantined_value", { count: fmtNumber(quarantined.rows) });
    if (!latest) return text;
    return `${text} ${t("status.quarantined_latest", { id: latest.event_id || "?", reason: latest.reason, time: fmtDateTime(latest.at) })}`;
  }

  function renderStatus() {
    const box = $("status-cards");
    clear(box);
    const status = state.status;
    if (!status) return;
    const site = $("site-name");
    site.textContent = status.gateway || "";

    const cameras = status.cameras || {};
    box.append(card(t("status.gateway"), "", "", [
      [t("status.site"), status.gateway || null],
      [t("status.version"), status.version || null],
      [t("status.uptime"), status.uptime_seconds === undefined ? undefined : fmtDuration(status.uptime_seconds)],
      [t("status.cameras"), cameras.known === undefined ? undefined : t("status.cameras_value", { online: cameras.online, known: cameras.known })],
      [t("status.polls"), cameras.comet_polls_held],
    ]));

    const upstream = status.upstream;
    if (upstream && !upstream.configured) {
      box.append(card(t("status.link"), "pill-neutral link-standalone", t("status.link.standalone"), [],
        h("p", { class: "muted", text: t("status.standalone_hint") })));
    } else if (upstream) {
      const linkState = upstream.configured ? upstream.state || "connecting" : "standalone";
      const pill = { up: "pill-good", backing_off: "pill-warn", down: "pill-bad", connecting: "pill-warn", standalone: "pill-neutral" }[linkState] || "pill-neutral";
      box.append(card(t("status.link"), `${pill} link-${linkState}`,
        has(`status.link.${linkState}`) ? t(`status.link.${linkState}`) : linkState, [
          [t("status.last_error"), upstream.last_error || null, upstream.last_error ? "error-text" : null],
          [t("status.outbox"), fmtNumber(upstream.outbox_depth)],
          [t("status.dead_letters"), fmtNumber(upstream.dead_letters), upstream.dead_letters ? "error-text" : null],
          [t("status.dropped"), upstream.dropped === undefined ? undefined : fmtNumber(upstream.dropped)],
        ]));
    }

    const mqtt = status.mqtt;
    if (mqtt && mqtt.configured) {
      const mqttState = mqtt.state || "connecting";
      const pill = { up: "pill-good", backing_off: "pill-warn", down: "pill-bad", connecting: "pill-warn" }[mqttState] || "pill-neutral";
      box.append(card(t("status.mqtt"), `${pill} mqtt-${mqttState}`,
        has(`status.link.${mqttState}`) ? t(`status.link.${mqttState}`) : mqttState, [
          [t("status.last_error"), mqtt.last_error || null, mqtt.last_error ? "error-text" : null],
          [t("status.mqtt_queued"), fmtNumber(mqtt.queued)],
          [t("status.mqtt_published"), fmtNumber(mqtt.published)],
          [t("status.mqtt_commands"), mqtt.commands ? `${fmtNumber(mqtt.commands_taken)} (${fmtNumber(mqtt.commands_rejected)})` : undefined],
        ]));
    }

    const store = status.store;
    if (store && store.log_damaged) box.prepend(logDamageCard(store.log_damaged));
    if (store && store.replaced) box.prepend(replacedCard(store.replaced));
    if (store && store.open_problem) box.prepend(openProblemCard(store.open_problem));
    if (store) {
      const opening = store.open === false;
      const cannotOpen = opening && !!store.open_problem;
      const integrity = store.integrity || {};
      const damaged = integrity.state === "damaged";
      const pill = cannotOpen ? "pill-bad" : opening ? "pill-warn" : store.degraded || damaged || store.replaced ? "pill-bad" : "pill-good";
      const word = cannotOpen ? t("status.store_cannot_open") : opening ? t("status.store_opening") : damaged ? t("status.store_damaged") : store.replaced ? t("status.store_replaced") : store.degraded ? t("status.store_degraded") : t("status.store_ok");
      box.append(card(t("status.store"), pill, word, [
          [t("status.why"), store.reason ? store.reason : undefined, store.degraded ? "error-text" : null],
          [t("status.integrity"), integrity.state ? t(`status.integrity.${integrity.state}`) + (integrity.detail ? ` (${integrity.detail})` : "") : undefined, damaged ? "error-text" : null],
          [t("status.db"), fmtBytes(store.db_bytes)],
          [t("status.images"), t("status.images_value", { size: fmtBytes(store.image_bytes), files: fmtNumber(store.image_files) })],
          [t("status.events"), fmtNumber(store.events)],
          [t("status.free"), fmtBytes(store.free_disk_bytes)],
          [t("status.retention"), t("status.retention_value", { days: store.image_retention_days, size: fmtBytes(store.image_max_bytes) })],
          [t("status.event_retention"), t("status.event_retention_value", { days: store.event_retention_days, size: fmtBytes(store.max_db_bytes), used: fmtBytes(store.db_live_bytes) })],
          [t("status.events_dropped"), store.events_dropped_unsent ? t("status.events_dropped_value", { count: fmtNumber(store.events_dropped_unsent) }) : undefined, "error-text"],
          [t("status.quarantined"), quarantinedText(store.quarantined), "error-text quarantined"],
        ]));
    }

    const ports = status.serial_ports;
    if (ports) {
      const table = ports.length
        ? h("table", { class: "table table-compact" },
          h("thead", null, h("tr", null, ...["status.port", "status.device", "status.port_state", "status.since", "status.written", "status.frames_dropped"].map((key) => h("th", { text: t(key) })))),
          h("tbody", null, ports.map((port) => h("tr", null,
            h("td", { text: port.name }),
            h("td", { class: "mono", text: port.device }),
            h("td", null, h("span", { class: `port-state port-${port.state}`, text: has(`status.port.${port.state}`) ? t(`status.port.${port.state}`) : port.state }),
              port.reason ? h("div", { class: "muted small", text: port.reason }) : null),
            h("td", { text: fmtDateTime(port.since) }),
            h("td", { text: fmtNumber(port.bytes_written) }),
            h("td", { text: fmtNumber(port.frames_dropped) })))))
        : h("p", { class: "muted", text: t("status.serial_none") });
      box.append(h("section", { class: "status-card status-wide" }, h("h2", { text: t("status.serial") }), table));
    }

    const letters = status.dead_letters;
    if (letters) {
      const content = letters.length
        ? h("table", { class: "table table-compact responsive" },
          h("thead", null, h("tr", null, ...["status.dl_event", "events.camera", "status.dl_status", "status.dl_body", "status.dl_at", "status.dl_attempts"].map((key) => h("th", { text: t(key) })),
            canReplay() ? h("th", { text: "" }) : null)),
          h("tbody", null, letters.map((letter) => h("tr", null,
            h("td", { class: "mono", dataset: { label: t("status.dl_event") }, text: letter.event_id }),
            h("td", { dataset: { label: t("events.camera") }, text: letter.camera || "" }),
            h("td", { dataset: { label: t("status.dl_status") }, text: letter.status === null || letter.status === undefined ? t("common.none") : letter.status }),
            h("td", { class: "dl-body", dataset: { label: t("status.dl_body") }, text: letter.body || "" }),
            h("td", { dataset: { label: t("status.dl_at") }, text: fmtDateTime(letter.at) }),
            h("td", { dataset: { label: t("status.dl_attempts") }, text: letter.attempts === undefined ? "" : letter.attempts }),
            canReplay() ? h("td", null, h("button", { class: "btn btn-small", type: "button", "data-action": "replay", onclick: () => replay(letter) }, icon("replay"), h("span", { text: t("status.replay") }))) : null))))
        : h("p", { class: "muted", text: t("status.dead_letters_none") });
      box.append(h("section", { class: "status-card status-wide" }, h("h2", { text: t("status.dead_letters") }), content));
    }
    $("status-updated").textContent = state.statusAt ? t("status.updated", { time: fmtClock(state.statusAt) }) : "";
  }

  /** A database that could not be used was moved aside and a fresh one
   * started: red, with when, why, where the old file is and what the salvage
   * copied and lost, until an admin acknowledges it. */
  function replacedCard(replaced) {
    const salvage = replaced.salvage || {};
    const parts = salvage.parts || {};
    const names = Object.keys(parts);
    const table = names.length ? h("table", { class: "table salvage-table" },
      h("thead", null, h("tr", null, ...["status.salvage_part", "status.salvage_copied", "status.salvage_unusable", "status.salvage_damaged"].map((key) => h("th", { text: t(key) })))),
      h("tbody", null, ...names.map((name) => {
        const part = parts[name];
        const lost = part.unusable || part.damaged;
        return h("tr", { class: lost ? "error-text" : null },
          h("td", { dataset: { label: t("status.salvage_part") }, text: has(`status.salvage.${name}`) ? t(`status.salvage.${name}`) : name }),
          h("td", { dataset: { label: t("status.salvage_copied") }, text: fmtNumber(part.copied) }),
          h("td", { dataset: { label: t("status.salvage_unusable") }, text: fmtNumber(part.unusable) }),
          h("td", { dataset: { label: t("status.salvage_damaged") }, text: fmtNumber(part.damaged) }));
      }))) : null;
    const verdict = salvage.error ? t("status.salvage_failed", { error: salvage.error }) : !salvage.finished ? t("status.salvage_unfinished") : salvage.lost_anything ? t("status.salvage_lost") : t("status.salvage_whole");
    const section = card(t("status.replaced_title"), "pill-bad", t("status.replaced_pill"), [
      [t("status.replaced_at"), fmtDateTime(replaced.at)],
      [t("status.why"), replaced.reason || null, "error-text"],
      [t("status.replaced_file"), replaced.moved_to, "mono"],
      [t("status.salvage"), verdict, salvage.lost_anything || !salvage.finished ? "error-text" : null],
    ], h("div", { class: "salvage" },
      h("p", { class: "muted", text: t("status.replaced_hint") }),
      table,
      canReplay() ? h("button", { class: "btn", type: "button", "data-action": "acknowledge-replacement", onclick: () => acknowledgeDamage(replaced.moved_to) }, icon("check"), h("span", { text: t("status.replaced_ack") })) : null));
    section.classList.add("status-wide", "status-alert");
    section.setAttribute("role", "alert");
    return section;
  }

  function openProblemCard(problem) {
    const section = card(t("status.store"), "pill-bad", t("status.store_cannot_open"), [
      [t("status.why"), problem.reason, "error-text"],
      [t("status.open_since"), fmtDateTime(problem.since)],
      [t("status.open_attempts"), t("status.open_attempts_value", { count: fmtNumber(problem.attempts), seconds: Math.round(problem.retry_seconds) })],
    ], h("p", { class: "muted", text: t("status.open_problem_hint") }));
    section.classList.add("status-wide", "status-alert");
    section.setAttribute("role", "alert");
    return section;
  }

  /** The write-ahead log was damaged: the transactions committed after the
   * damage were dropped. Red until an admin acknowledges it. */
  function logDamageCard(damage) {
    const section = card(t("status.log_damaged_title"), "pill-bad", t("status.replaced_pill"), [
      [t("status.replaced_at"), fmtDateTime(damage.at)],
      [t("status.log_dropped"), t("status.log_dropped_value", { count: fmtNumber(damage.dropped_commits) }), "error-text"],
      [t("status.log_copy"), damage.copy || null, "mono"],
    ], h("div", { class: "salvage" },
      h("p", { class: "muted", text: t("status.log_damaged_hint") }),
      canReplay() ? h("button", { class: "btn", type: "button", "data-action": "acknowledge-log-damage", onclick: () => acknowledgeDamage(damage.copy || "") }, icon("check"), h("span", { text: t("status.replaced_ack") })) : null));
    section.classList.add("status-wide", "status-alert");
    section.setAttribute("role", "alert");
    return section;
  }

  async function acknowledgeDamage(file) {
    const yes = await confirmDialog({
      title: t("status.replaced_ack"),
      text: t("status.replaced_ack_confirm", { file }),
      ok: t("status.replaced_ack"),
    });
    if (!yes) return;
    try {
      await api("POST", "/api/store/damage/acknowledge", { json: {} });
      toast(t("status.replaced_acked"), "ok");
    } catch (error) {
      failed(t("status.replaced_ack"), error);
    }
    loadStatus();
  }

  async function replay(letter) {
    try {
      await api("POST", `/api/dead-letters/${encodeURIComponent(letter.event_id)}/replay`, { json: {} });
      toast(t("status.replayed", { id: letter.event_id }), "ok");
    } catch (error) {
      failed(t("status.replay"), error);
    }
    loadStatus();
  }

  // ---------------------------------------------------------------- routing

  function route() {
    if (!state.session) return;
    const wanted = window.location.hash.replace(/^#/, "");
    const allowed = VIEWS.includes(wanted) && (wanted !== "users" || canReplay());
    showView(allowed ? wanted : "lanes");
  }

  function showView(name) {
    state.view = name;
    for (const section of document.querySelectorAll("main .view")) section.hidden = section.dataset.view !== name;
    for (const tab of document.querySelectorAll(".tabs .tab")) {
      if (tab.dataset.view === name) tab.setAttribute("aria-current", "page");
      else tab.removeAttribute("aria-current");
    }
    if (name === "status") {
      loadStatus();
      startStatusTimer();
    } else {
      stopStatusTimer();
    }
    if (name === "events" && !state.events.loaded) {
      fillFilterOptions();
      searchEvents(false);
    }
    if (name === "whitelist") loadWhitelist();
    if (name === "reports") showReports();
    if (name === "users") loadAccounts();
  }

  function renderEverything() {
    renderUser();
    setLiveState($("live-state").dataset.state || "connecting");
    if (!state.session) return;
    renderLanes();
    renderLive();
    renderAttention();
    renderOccupancy();
    fillFilterOptions();
    renderEvents();
    renderWhitelist();
    renderImport(state.whitelist.importResult || null);
    renderStatus();
    renderAccounts();
    renderReport();
    renderHandover();
  }

  // ------------------------------------------------- users, tokens, audit

  /** A small form in a dialog: ``fields`` are {name, label, type ("text",
   * "password", "select"), options, hint, required, autocomplete}. On submit
   * ``submit(values)`` runs; an API error is shown in the dialog (next to
   * the field it names) and the dialog stays open. Resolves with what
   * ``submit`` returned, or null when cancelled. */
  function formDialog({ title, text, ok, danger, fields, submit }) {
    const dialog = $("form-dialog");
    const form = $("form-dialog-form");
    const holder = $("form-dialog-fields");
    const message = $("form-dialog-message");
    $("form-dialog-title").textContent = title;
    $("form-dialog-ok").textContent = ok;
    $("form-dialog-ok").className = `btn btn-large ${danger ? "btn-danger" : "btn-primary"}`;
    message.hidden = true;
    clear(holder);
    if (text) holder.append(h("p", { class: "dialog-text", text }));
    for (const field of fields) {
      let input;
      if (field.type === "select") {
        input = h("select", { name: field.name },
          ...field.options.map(([value, label]) => h("option", { value, text: label })));
        if (field.value) input.value = field.value;
      } else if (field.type === "checkbox") {
        holder.append(h("div", { class: "field" },
          h("label", { class: "check" },
            h("input", { type: "checkbox", name: field.name, checked: !!field.value }),
            h("span", { text: field.label })),
          field.hint ? h("span", { class: "hint", text: field.hint }) : null));
        continue;
      } else {
        input = h("input", {
          name: field.name, type: field.type || "text", autocomplete: field.autocomplete || "off",
          spellcheck: "false", maxlength: field.maxlength || null,
        });
        if (field.value) input.value = field.value;
      }
      holder.append(h("label", { class: "field" },
        h("span", { text: field.label }), input,
        field.hint ? h("span", { class: "hint", text: field.hint }) : null,
        h("span", { class: "field-error", dataset: { errorFor: field.name } })));
    }
    return new Promise((resolve) => {
      let done = false;
      const finish = (value) => {
        if (done) return;
        done = true;
        form.onsubmit = null;
        $("form-dialog-cancel").onclick = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(value);
      };
      form.onsubmit = async (event) => {
        event.preventDefault();
        message.hidden = true;
        for (const node of holder.querySelectorAll(".field-error")) node.textContent = "";
        const values = {};
        for (const field of fields) {
          const element = form.elements[field.name];
          values[field.name] = field.type === "checkbox" ? element.checked : element.value;
        }
        $("form-dialog-ok").disabled = true;
        try {
          finish(await submit(values));
        } catch (error) {
          const errors = (error.data && error.data.errors) || {};
          for (const [name, reason] of Object.entries(errors)) {
            const slot = holder.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
            if (slot) slot.textContent = reason;
          }
          message.textContent = errorText(error);
          message.hidden = false;
        } finally {
          $("form-dialog-ok").disabled = false;
        }
      };
      $("form-dialog-cancel").onclick = () => finish(null);
      dialog.onclose = () => finish(null);
      dialog.showModal();
      const first = holder.querySelector("input, select");
      if (first) first.focus();
    });
  }

  function roleOptions() {
    return ["viewer", "operator", "admin"].map((role) => [role, t(`role.${role}`)]);
  }

  function reasonField() {
    return { name: "reason", label: t("users.reason"), maxlength: 500 };
  }

  function passwordField(name, label) {
    return {
      name, label, type: "password", autocomplete: "new-password",
      hint: t("users.password_hint", { min: state.accounts.minPassword }),
    };
  }

  async function loadAccounts() {
    if (!canReplay()) return;
    const token = ++state.accounts.token;
    try {
      const [users, tokens, audit] = await Promise.all([
        api("GET", "/api/users"), api("GET", "/api/tokens"), api("GET", `/api/audit?limit=${AUDIT_PAGE}`),
      ]);
      if (token !== state.accounts.token) return;
      state.accounts.users = users.users || [];
      state.accounts.minPassword = users.min_password_length || state.accounts.minPassword;
      state.accounts.tokens = tokens.tokens || [];
      state.accounts.audit = audit.entries || [];
      state.accounts.auditNext = audit.next_before;
      renderAccounts();
    } catch (error) {
      failed(t("nav.users"), error);
    }
  }

  async function loadOlderAudit() {
    if (!state.accounts.auditNext) return;
    try {
      const audit = await api("GET", `/api/audit?limit=${AUDIT_PAGE}&before=${state.accounts.auditNext}`);
      state.accounts.audit = state.accounts.audit.concat(audit.entries || []);
      state.accounts.auditNext = audit.next_before;
      renderAccounts();
    } catch (error) {
      failed(t("audit.title"), error);
    }
  }

  function sourceText(source) {
    return t(source === "config" ? "users.source_config" : "users.source_store");
  }

  function renderAccounts() {
    const rows = $("users-rows");
    clear(rows);
    for (const user of state.accounts.users) {
      const actions = user.source === "store"
        ? h("div", { class: "row-actions" },
          h("button", { class: "btn btn-small", type: "button", "data-action": "reset", onclick: () => resetPassword(user), text: t("users.reset") }),
          h("button", { class: "btn btn-small", type: "button", "data-action": user.disabled ? "enable" : "disable", onclick: () => setDisabled(user, !user.disabled), text: t(user.disabled ? "users.enable" : "users.disable") }),
          h("button", { class: "btn btn-small btn-danger-ghost", type: "button", "data-action": "remove", onclick: () => removeUser(user), text: t("users.remove") }))
        : h("span", { class: "muted small", text: t("users.config_hint") });
      rows.append(h("tr", { dataset: { user: user.name }, class: user.disabled ? "is-disabled" : null },
        h("td", { dataset: { label: t("users.name") } }, h("strong", { text: user.name })),
        h("td", { dataset: { label: t("users.role") }, text: t(`role.${user.role}`) }),
        h("td", { dataset: { label: t("users.state") }, class: "user-state", text: t(user.disabled ? "users.disabled" : "users.active") }),
        h("td", { dataset: { label: t("users.source") }, text: sourceText(user.source) }),
        h("td", { dataset: { label: t("users.actions") } }, actions)));
    }
    const tokenRows = $("tokens-rows");
    clear(tokenRows);
    for (const token of state.accounts.tokens) {
      const actions = token.source === "store"
        ? h("button", { class: "btn btn-small btn-danger-ghost", type: "button", "data-action": "revoke", onclick: () => revokeToken(token), text: t("tokens.revoke") })
        : h("span", { class: "muted small", text: t("users.config_hint") });
      tokenRows.append(h("tr", { dataset: { token: token.name } },
        h("td", { dataset: { label: t("users.name") } }, h("strong", { text: token.name })),
        h("td", { dataset: { label: t("users.role") }, text: t(`role.${token.role}`) }),
        h("td", { dataset: { label: t("users.source") }, text: sourceText(token.source) }),
        h("td", { dataset: { label: t("users.actions") } }, actions)));
    }
    $("tokens-none").hidden = state.accounts.tokens.length > 0;
    const auditRows = $("audit-rows");
    clear(auditRows);
    for (const entry of state.accounts.audit) {
      const who = entry.via === "token" ? `${entry.who} (${t("audit.via_token")})` : entry.who;
      auditRows.append(h("tr", { dataset: { action: entry.action } },
        h("td", { dataset: { label: t("audit.time") }, text: fmtDateTime(entry.at) }),
        h("td", { dataset: { label: t("audit.who") } }, h("span", { text: who }), " ", h("span", { class: `role role-${entry.role}`, text: t(`role.${entry.role}`) })),
        h("td", { dataset: { label: t("audit.action") }, class: "mono", text: entry.action }),
        h("td", { dataset: { label: t("audit.target") }, class: "audit-target", text: entry.target || t("common.none") }),
        h("td", { dataset: { label: t("audit.reason") }, class: "audit-reason", text: entry.reason || t("common.none") })));
    }
    if (state.accounts.audit.length === 0) {
      auditRows.append(h("tr", {}, h("td", { colspan: "5", class: "empty", text: t("audit.empty") })));
    }
    $("audit-more").hidden = !state.accounts.auditNext;
  }

  async function addUser() {
    const created = await formDialog({
      title: t("users.add_title"), ok: t("users.add"),
      fields: [
        { name: "name", label: t("users.name"), maxlength: 64 },
        { name: "role", label: t("users.role"), type: "select", options: roleOptions(), value: "operator" },
        passwordField("password", t("users.password")),
        reasonField(),
      ],
      submit: (values) => api("POST", "/api/users", { json: values }),
    });
    if (created) {
      toast(t("users.added", { name: created.name }), "ok");
      loadAccounts();
    }
  }

  async function resetPassword(user) {
    const changed = await formDialog({
      title: t("users.reset_title", { name: user.name }), ok: t("users.save"),
      text: t("users.signed_out_hint", { name: user.name }),
      fields: [passwordField("password", t("users.password")), reasonField()],
      submit: (values) => api("PUT", `/api/users/${encodeURIComponent(user.name)}`, { json: values }),
    });
    if (changed) {
      toast(t("users.changed", { name: user.name }), "ok");
      loadAccounts();
    }
  }

  async function setDisabled(user, disabled) {
    const changed = await formDialog({
      title: t(disabled ? "users.disable_title" : "users.enable_title", { name: user.name }),
      ok: t(disabled ? "users.disable" : "users.enable"), danger: disabled,
      text: disabled ? t("users.signed_out_hint", { name: user.name }) : null,
      fields: [reasonField()],
      submit: (values) => api("PUT", `/api/users/${encodeURIComponent(user.name)}`, { json: { disabled, reason: values.reason } }),
    });
    if (changed) {
      toast(t("users.changed", { name: user.name }), "ok");
      loadAccounts();
    }
  }

  async function removeUser(user) {
    const removed = await formDialog({
      title: t("users.remove_title", { name: user.name }), ok: t("users.remove"), danger: true,
      text: t("users.signed_out_hint", { name: user.name }),
      fields: [reasonField()],
      submit: async (values) => {
        await api("DELETE", `/api/users/${encodeURIComponent(user.name)}`, { json: values });
        return true;
      },
    });
    if (removed) {
      toast(t("users.removed", { name: user.name }), "ok");
      loadAccounts();
    }
  }

  async function addToken() {
    const created = await formDialog({
      title: t("tokens.add_title"), ok: t("tokens.create"),
      fields: [
        { name: "name", label: t("users.name"), maxlength: 64 },
        { name: "role", label: t("users.role"), type: "select", options: roleOptions(), value: "viewer" },
        reasonField(),
      ],
      submit: (values) => api("POST", "/api/tokens", { json: values }),
    });
    if (created) {
      $("token-value").textContent = created.token;
      $("token-shown").hidden = false;
      loadAccounts();
    }
  }

  async function revokeToken(token) {
    const revoked = await formDialog({
      title: t("tokens.revoke_title", { name: token.name }), ok: t("tokens.revoke"), danger: true,
      fields: [reasonField()],
      submit: async (values) => {
        await api("DELETE", `/api/tokens/${encodeURIComponent(token.name)}`, { json: values });
        return true;
      },
    });
    if (revoked) {
      toast(t("tokens.revoked", { name: token.name }), "ok");
      loadAccounts();
    }
  }

  async function changeOwnPassword() {
    const changed = await formDialog({
      title: t("password.title"), ok: t("users.save"),
      fields: [
        { name: "current_password", label: t("password.current"), type: "password", autocomplete: "current-password" },
        passwordField("new_password", t("password.new")),
      ],
      submit: async (values) => {
        await api("POST", "/api/session/password", { json: values });
        return true;
      },
    });
    if (changed) toast(t("password.changed"), "ok");
  }

  // ------------------------------------------------------------ wiring

  function wireStatic() {
    $("login-form").addEventListener("submit", submitLogin);
    for (const button of document.querySelectorAll(".lang-switch")) {
      button.addEventListener("click", () => setLanguage(state.lang === "zh" ? "en" : "zh", true));
    }
    $("logout").addEventListener("click", logout);
    $("change-password").addEventListener("click", changeOwnPassword);
    $("user-add").addEventListener("click", addUser);
    $("token-add").addEventListener("click", addToken);
    $("token-hide").addEventListener("click", () => {
      $("token-shown").hidden = true;
      $("token-value").textContent = "";
    });
    $("audit-more").addEventListener("click", loadOlderAudit);
    window.addEventListener("hashchange", route);

    $("report-form").addEventListener("submit", (event) => {
      event.preventDefault();
      updateExportLink();
      loadReport();
    });
    $("report-date").addEventListener("change", updateExportLink);
    $("handover-form").addEventListener("submit", (event) => {
      event.preventDefault();
      loadHandover();
    });
    $("handover-print").addEventListener("click", () => {
      document.body.classList.add("printing-handover");
      window.print();
    });
    window.addEventListener("afterprint", () => document.body.classList.remove("printing-handover"));

    $("events-form").addEventListener("submit", (event) => {
      event.preventDefault();
      searchEvents(false);
    });
    $("events-form").addEventListener("reset", () => window.setTimeout(() => {
      $("events-form").elements.type.value = "";
      searchEvents(false);
    }, 0));
    $("events-more").addEventListener("click", () => searchEvents(true));

    let searchTimer = null;
    $("whitelist-q").addEventListener("input", (event) => {
      window.clearTimeout(searchTimer);
      searchTimer = window.setTimeout(() => {
        state.whitelist.q = event.target.value.trim();
        state.whitelist.offset = 0;
        loadWhitelist();
      }, 250);
    });
    $("whitelist-add").addEventListener("click", () => openEntryDialog(null));
    $("whitelist-prev").addEventListener("click", () => {
      state.whitelist.offset = Math.max(0, state.whitelist.offset - WHITELIST_PAGE);
      loadWhitelist();
    });
    $("whitelist-next").addEventListener("click", () => {
      state.whitelist.offset += WHITELIST_PAGE;
      loadWhitelist();
    });
    $("whitelist-file").addEventListener("change", importCsv);
    $("import-close").addEventListener("click", () => renderImport(null));
    $("entry-form").addEventListener("submit", saveEntry);
    $("entry-cancel").addEventListener("click", () => $("entry-dialog").close());

    $("image-close").addEventListener("click", closeImage);
    $("image-dialog").addEventListener("close", () => showImageUrl(null, false));
    $("event-close").addEventListener("click", () => $("event-dialog").close());
    // A click on the dim backdrop closes a picture or the event details.
    for (const id of ["image-dialog", "event-dialog"]) {
      const dialog = $(id);
      dialog.addEventListener("click", (event) => {
        if (event.target === dialog) dialog.close();
      });
    }

    window.addEventListener("unhandledrejection", (event) => {
      const reason = event.reason;
      if (reason instanceof ApiError && reason.status === 401) return;
      toast(t("error.server", { error: (reason && reason.message) || String(reason) }), "error");
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
