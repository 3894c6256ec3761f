#!/usr/bin/env bash
# Install or upgrade anpr-gateway as a systemd service (Raspberry Pi OS, Debian).
#
#   sudo systemd/install.sh                 install from this source tree
#   sudo systemd/install.sh --wheel FILE    install a built wheel
#
# What it does, and does again harmlessly on every run (an upgrade is the same
# command with newer files):
#   * system user anpr-gateway (no login, no home), in group dialout;
#   * a virtualenv in /opt/anpr-gateway (Raspberry Pi OS refuses system-wide
#     pip installs) with the gateway and its dependencies; the twistd plugin
#     cache is rebuilt, so the service never needs to write to /opt;
#   * /etc/anpr-gateway/gateway.toml: a copy of etc/gateway.toml, only if there
#     is none yet (an existing configuration is never touched);
#   * /var/lib/anpr-gateway: the state (database, images), kept as it is; the
#     database schema is migrated by the gateway itself when it starts;
#   * /etc/systemd/system/anpr-gateway.service, enabled; restarted if it was
#     running and the configuration still checks.
#
# Options:
#   --root DIR    install under DIR instead of / (also: ANPR_ROOT=DIR), for a
#                 test or a look at the result: no user is created and systemctl
#                 is not run (what would be run is printed). The virtualenv made
#                 there works only at that path.
#   --wheel FILE  install this wheel instead of building one from this tree.
#   --python EXE  the Python to make the virtualenv with (default: python3, 3.11+).
#   --reuse-site-packages DIR
#                 do not download dependencies: make DIR (another environment's
#                 site-packages that has them) visible in the virtualenv, and
#                 install only the gateway. For tests; not for a site.
#   --no-restart  do not restart a running service after an upgrade.
set -euo pipefail

# Everything installed must be readable by the service user, whatever root's umask.
umask 022

SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="${ANPR_ROOT:-}"
WHEEL=""
PYTHON="python3"
REUSE=""
RESTART=1

SERVICE_USER="anpr-gateway"
PREFIX_PATH="/opt/anpr-gateway"
CONFIG_PATH="/etc/anpr-gateway"
STATE_PATH="/var/lib/anpr-gateway"
UNIT_PATH="/etc/systemd/system/anpr-gateway.service"

say() { printf 'anpr-gateway install: %s\n' "$*"; }
die() { printf 'anpr-gateway install: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT="$2"; shift 2 ;;
        --root=*) ROOT="${1#*=}"; shift ;;
        --wheel) [ $# -ge 2 ] || die "--wheel needs a file"; WHEEL="$2"; shift 2 ;;
        --wheel=*) WHEEL="${1#*=}"; shift ;;
        --python) [ $# -ge 2 ] || die "--python needs a program"; PYTHON="$2"; shift 2 ;;
        --python=*) PYTHON="${1#*=}"; shift ;;
        --reuse-site-packages) [ $# -ge 2 ] || die "--reuse-site-packages needs a directory"
            REUSE="$2"; shift 2 ;;
        --reuse-site-packages=*) REUSE="${1#*=}"; shift ;;
        --no-restart) RESTART=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT"
    ROOT="$(cd "$ROOT" && pwd)"
    [ "$ROOT" != "/" ] || ROOT=""
fi
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo $0 ...), or use --root DIR to install elsewhere"
fi
if [ -n "$WHEEL" ]; then
    [ -f "$WHEEL" ] || die "no such wheel: $WHEEL"
    WHEEL="$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")"
fi
if [ -n "$REUSE" ]; then
    [ -d "$REUSE" ] || die "no such directory: $REUSE"
    REUSE="$(cd "$REUSE" && pwd)"
fi

PREFIX="$ROOT$PREFIX_PATH"
CONFIG_DIR="$ROOT$CONFIG_PATH"
STATE_DIR="$ROOT$STATE_PATH"
UNIT="$ROOT$UNIT_PATH"

# Commands that change the machine itself: run them, or under --root say them.
system() {
    if [ -n "$ROOT" ]; then
        local quoted
        quoted="$(printf '%q ' "$@")"
        say "would run: ${quoted% }"
    else
        "$@"
    fi
}

# --- Python --------------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "no $PYTHON: sudo apt install python3 python3-venv"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PYTHON is older than 3.11"
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
    || die "$PYTHON cannot make virtualenvs: sudo apt install python3-venv"
PYTHON_VERSION="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

# --- the service user ------------------------------------------------------
if [ -n "$ROOT" ] || ! getent passwd "$SERVICE_USER" >/dev/null; then
    system useradd --system --user-group --home-dir "$STATE_PATH" --no-create-home \
        --shell /usr/sbin/nologin --comment "anpr-gateway service" "$SERVICE_USER"
fi
# Serial ports belong to dialout (the unit adds the group too; this is for
# checks such as `sudo -u anpr-gateway ...`).
system usermod --append --groups dialout "$SERVICE_USER"

# --- the virtualenv --------------------------------------------------------
venv_version() {
    sed -n 's/^version\(_info\)\{0,1\} *= *\([0-9]*\.[0-9]*\).*/\2/p' "$PREFIX/pyvenv.cfg" 2>/dev/null | head -n 1
}
if [ ! -x "$PREFIX/bin/python" ]; then
    say "making the virtualenv $PREFIX (Python $PYTHON_VERSION)"
    "$PYTHON" -m venv "$PREFIX"
elif [ "$(venv_version)" != "$PYTHON_VERSION" ] || ! "$PREFIX/bin/python" -c '' 2>/dev/null; then
    # The system Python changed (an OS upgrade): a virtualenv cannot follow.
    say "remaking the virtualenv $PREFIX for Python $PYTHON_VERSION (was $(venv_version))"
    "$PYTHON" -m venv --clear "$PREFIX"
fi
VENV_PYTHON="$PREFIX/bin/python"
SITE_PACKAGES="$("$VENV_PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
REUSE_PTH="$SITE_PACKAGES/anpr-gateway-reuse-site-packages.pth"
if [ -n "$REUSE" ]; then
    printf '%s\n' "$REUSE" > "$REUSE_PTH"
    # Twisted gets a copy of its own here, as in a real install: twistd's
    # plugins are found (and their cache written) next to twisted/plugins,
    # and DIR's copy of the gateway, if it has one, must not shadow this one.
    rm -rf "$SITE_PACKAGES/twisted"
    cp -a "$REUSE/twisted" "$SITE_PACKAGES/twisted"
    rm -f "$SITE_PACKAGES/twisted/plugins/anpr_gateway.py" \
        "$SITE_PACKAGES/twisted/plugins/dropin.cache"
    # Twisted comes from DIR, its scripts do not: the unit runs bin/twistd.
    printf '#!%s\nimport sys\nfrom twisted.scripts.twistd import run\nsys.exit(run())\n' \
        "$VENV_PYTHON" > "$PREFIX/bin/twistd"
    chmod 0755 "$PREFIX/bin/twistd"
else
    rm -f "$REUSE_PTH"
fi

# --- the gateway -------------------------------------------------------------
PIP=("$VENV_PYTHON" -m pip --disable-pip-version-check --no-input)
BUILD_DIR=""
cleanup() { [ -z "$BUILD_DIR" ] || rm -rf "$BUILD_DIR"; }
trap cleanup EXIT
if [ -z "$WHEEL" ]; then
    BUILD_DIR="$(mktemp -d)"
    say "building a wheel from $SOURCE"
    "${PIP[@]}" wheel --quiet --no-deps --wheel-dir "$BUILD_DIR" "$SOURCE"
    WHEEL="$(ls "$BUILD_DIR"/anpr_gateway-*.whl)"
fi
say "installing $(basename "$WHEEL") into $PREFIX"
if [ -z "$REUSE" ]; then
    # Dependencies first (new ones, and upgrades the new version asks for)...
    "${PIP[@]}" install "$WHEEL"
fi
# ...then the gateway itself again: a rebuilt wheel with an unchanged version
# number would otherwise be "already satisfied" and not replace the old code.
"${PIP[@]}" install --quiet --no-deps --force-reinstall "$WHEEL"

# twistd finds its plugins through a cache file next to them, which it writes
# when missing or stale. The service cannot write to /opt (ProtectSystem=strict),
# so the cache is written now, by root. From / so that no directory but the
# installed ones can contribute plugins.
(
    cd /
    "$VENV_PYTHON" - <<'PYTHON'
import sys
from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin, getPlugins

list(getPlugins(IPlugin))
if "anpr-gateway" not in {plugin.tapname for plugin in getPlugins(IServiceMaker)}:
    sys.exit("the anpr-gateway twistd plugin is not installed")
PYTHON
)
[ -f "$SITE_PACKAGES/twisted/plugins/dropin.cache" ] \
    || die "the twistd plugin cache was not written in $SITE_PACKAGES/twisted/plugins"

# The documentation and the reference configuration of the installed version
# (compare it with /etc/anpr-gateway/gateway.toml after an upgrade).
install -d "$PREFIX/docs"
install -m 0644 "$SOURCE/README.md" "$PREFIX/README.md"
install -m 0644 "$SOURCE"/docs/*.md "$PREFIX/docs/"
install -m 0644 "$SOURCE/etc/gateway.toml" "$PREFIX/gateway.toml.reference"

# --- configuration -------------------------------------------------------------
# Readable by the service's group only: it may hold the cloud secret and the
# TLS key.
install -d -m 0750 "$CONFIG_DIR"
system chown "root:$SERVICE_USER" "$CONFIG_PATH"
NEW_CONFIG=0
if [ -e "$CONFIG_DIR/gateway.toml" ]; then
    say "keeping the configuration $CONFIG_DIR/gateway.toml"
else
    install -m 0640 "$SOURCE/etc/gateway.toml" "$CONFIG_DIR/gateway.toml"
    system chown "root:$SERVICE_USER" "$CONFIG_PATH/gateway.toml"
    say "wrote $CONFIG_DIR/gateway.toml from etc/gateway.toml: edit it for this site"
    NEW_CONFIG=1
fi

# --- state -------------------------------------------------------------------
install -d -m 0750 "$STATE_DIR"
system chown "$SERVICE_USER:$SERVICE_USER" "$STATE_PATH"

# --- the unit ------------------------------------------------------------------
install -d "$(dirname "$UNIT")"
install -m 0644 "$SOURCE/systemd/anpr-gateway.service" "$UNIT"
say "installed the unit $UNIT"

CONFIG_OK=1
if ! "$PREFIX/bin/anpr-gateway-check-config" "$CONFIG_DIR/gateway.toml"; then
    CONFIG_OK=0
fi

if [ -n "$ROOT" ]; then
    system systemctl daemon-reload
    system systemctl enable anpr-gateway.service
    say "installed under $ROOT"
    exit 0
fi
if [ ! -d /run/systemd/system ]; then
    say "systemd is not running on this machine: the service was not enabled"
    exit 0
fi
systemctl daemon-reload
systemctl enable --quiet anpr-gateway.service
if [ "$CONFIG_OK" -eq 0 ]; then
    say "the configuration does not check (above): fix it, then: systemctl restart anpr-gateway"
    exit 1
fi
if systemctl is-active --quiet anpr-gateway.service; then
    if [ "$RESTART" -eq 1 ]; then
        systemctl restart anpr-gateway.service
        say "restarted anpr-gateway (journalctl -u anpr-gateway -f to follow it)"
    else
        say "upgraded; the running gateway is the old one until: systemctl restart anpr-gateway"
    fi
elif [ "$NEW_CONFIG" -eq 1 ]; then
    say "next: edit $CONFIG_PATH/gateway.toml, then: systemctl start anpr-gateway"
else
    say "enabled; start it with: systemctl start anpr-gateway"
fi
