#!/usr/bin/env bash
# Install or upgrade anpr-gateway as a systemd service (Raspberry Pi OS, Debian).
#
#   sudo systemd/install.sh                 install from this source tree
#   sudo systemd/install.sh --wheel FILE    install a built wheel
#   sudo systemd/install.sh --bundle FILE   install an offline bundle (no network)
#   systemd/install.sh --make-bundle DIR    write an offline bundle into DIR
#
# What it does, and does again harmlessly on every run (an upgrade is the same
# command with newer files):
#   * system user anpr-gateway (no login, no home), in group dialout;
#   * a virtualenv per version, /opt/anpr-gateway/releases/<version> (Raspberry
#     Pi OS refuses system-wide pip installs), with the gateway and its
#     dependencies; /opt/anpr-gateway/current points at the one the unit runs,
#     /opt/anpr-gateway/previous at the one before. The twistd plugin cache is
#     rebuilt, so the service never needs to write to /opt;
#   * /etc/anpr-gateway/gateway.toml: a copy of etc/gateway.toml, only if there
#     is none yet (an existing configuration is never touched);
#   * /var/lib/anpr-gateway: the state (database, images), kept as it is; the
#     database schema is migrated by the gateway itself when it starts;
#   * /etc/systemd/system/anpr-gateway.service, enabled.
#
# An upgrade (another version than current) that finds the gateway running
# stops it, copies the database with SQLite's online backup API into
# /var/backups/anpr-gateway (the last 3 copies kept), switches current to the
# new release, starts it and waits for READY, then runs anpr-gateway-self-check
# (configuration, listeners, a plate answered on loopback). If any of it fails
# it switches back, restores the database copy, starts the old version again
# and says why, in one paragraph (exit status 1).
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
#   --no-restart  do not restart a running service after an upgrade (the
#                 database copy is then taken while the old version runs).
#   --rollback    go back to the previous release: stop, restore the database
#                 copy taken by the upgrade to the current one, switch, start.
#   --start       start the service after installing, even if it was not running.
#   --keep-db-copies N
#                 keep the newest N pre-upgrade database copies (default 3).
#   --service-mode systemd|direct
#                 how the service is stopped and started (also ANPR_SERVICE_MODE).
#                 systemd (the default): systemctl. direct: for tests and for
#                 machines without systemd: the unit's ExecStart is run by this
#                 script as the invoking user (paths under --root), waiting for
#                 READY=1 as systemd does; pid in <root>/run/anpr-gateway.pid,
#                 output in <root>/var/log/anpr-gateway.log.
#   --bundle FILE install from an offline bundle made by --make-bundle: its
#                 manifest (and FILE.sha256, when it is next to FILE) is checked
#                 first, then pip installs only the bundle's wheels (--no-index:
#                 no package index is ever asked, no network is needed).
#   --make-bundle DIR
#                 write DIR/anpr-gateway-<version>-linux-<arch>-cp<XY>.tar.gz
#                 (and its .sha256): the gateway's wheel, every dependency as a
#                 wheel for that platform and Python, this script, the unit, the
#                 reference configuration, the docs and MANIFEST.sha256. Needs
#                 the package index; nothing is installed on this machine.
#   --platform ARCH
#                 with --make-bundle: aarch64 (Raspberry Pi OS 64-bit) or x86_64
#                 (default: this machine's).
#   --glibc X.Y   with --make-bundle: the oldest C library the bundle must run
#                 on (default: this machine's for its own platform, else 2.36,
#                 Raspberry Pi OS Bookworm's).
#   --python X.Y  with --make-bundle, a version instead of a program: the Python
#                 the bundle is for (3.11 for Bookworm, 3.13 for Trixie).
set -euo pipefail

# Everything installed must be readable by the service user, whatever root's umask.
umask 022

SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="${ANPR_ROOT:-}"
WHEEL=""
PYTHON="python3"
REUSE=""
RESTART=1
ROLLBACK=0
START_AFTER=0
KEEP_COPIES=3
SERVICE_MODE="${ANPR_SERVICE_MODE:-systemd}"
BUNDLE=""
MAKE_BUNDLE=""
PLATFORM=""
GLIBC=""

SERVICE_USER="anpr-gateway"
PREFIX_PATH="/opt/anpr-gateway"
CONFIG_PATH="/etc/anpr-gateway"
STATE_PATH="/var/lib/anpr-gateway"
UNIT_PATH="/etc/systemd/system/anpr-gateway.service"
BACKUP_PATH="/var/backups/anpr-gateway"

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
        --rollback) ROLLBACK=1; shift ;;
        --start) START_AFTER=1; shift ;;
        --keep-db-copies) [ $# -ge 2 ] || die "--keep-db-copies needs a number"; KEEP_COPIES="$2"; shift 2 ;;
        --keep-db-copies=*) KEEP_COPIES="${1#*=}"; shift ;;
        --service-mode) [ $# -ge 2 ] || die "--service-mode needs systemd or direct"; SERVICE_MODE="$2"; shift 2 ;;
        --service-mode=*) SERVICE_MODE="${1#*=}"; shift ;;
        --bundle) [ $# -ge 2 ] || die "--bundle needs a file"; BUNDLE="$2"; shift 2 ;;
        --bundle=*) BUNDLE="${1#*=}"; shift ;;
        --make-bundle) [ $# -ge 2 ] || die "--make-bundle needs a directory"; MAKE_BUNDLE="$2"; shift 2 ;;
        --make-bundle=*) MAKE_BUNDLE="${1#*=}"; shift ;;
        --platform) [ $# -ge 2 ] || die "--platform needs aarch64 or x86_64"; PLATFORM="$2"; shift 2 ;;
        --platform=*) PLATFORM="${1#*=}"; shift ;;
        --glibc) [ $# -ge 2 ] || die "--glibc needs a version such as 2.36"; GLIBC="$2"; shift 2 ;;
        --glibc=*) GLIBC="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

BUILD_DIR=""
BUNDLE_DIR=""
cleanup() {
    [ -z "$BUILD_DIR" ] || rm -rf "$BUILD_DIR"
    [ -z "$BUNDLE_DIR" ] || rm -rf "$BUNDLE_DIR"
}
trap cleanup EXIT

sha256_of() { sha256sum "$1" | cut -d ' ' -f 1; }

# --- an offline bundle: make one ------------------------------------------------
# Every manylinux tag a machine with glibc 2.$2 on $1 accepts, newest first.
platform_tags() {
    local arch="$1" minor="$2"
    while [ "$minor" -ge 17 ]; do
        printf -- '--platform\nmanylinux_2_%s_%s\n' "$minor" "$arch"
        minor=$((minor - 1))
    done
    printf -- '--platform\nmanylinux2014_%s\n' "$arch"
    if [ "$arch" = x86_64 ]; then
        printf -- '--platform\nmanylinux2010_x86_64\n--platform\nmanylinux1_x86_64\n'
    fi
}

make_bundle() {
    local target="$1" machine python_version tag work venv version name stage tags
    machine="$(uname -m)"
    PLATFORM="${PLATFORM:-$machine}"
    case "$PLATFORM" in
        aarch64|arm64) PLATFORM=aarch64 ;;
        x86_64|amd64) PLATFORM=x86_64 ;;
        *) die "--platform $PLATFORM: a bundle is for aarch64 or x86_64" ;;
    esac
    if [ -z "$GLIBC" ]; then
        if [ "$PLATFORM" = "$machine" ]; then
            GLIBC="$(getconf GNU_LIBC_VERSION 2>/dev/null | sed -n 's/^glibc //p')"
        fi
        GLIBC="${GLIBC:-2.36}"
    fi
    case "$GLIBC" in
        2.[0-9]|2.[0-9][0-9]) ;;
        *) die "--glibc $GLIBC: not a glibc version such as 2.36" ;;
    esac
    # --python: a version (the bundle's Python) or a program (its version).
    case "$PYTHON" in
        3.[0-9]|3.[0-9][0-9]) python_version="$PYTHON"; PYTHON=python3 ;;
        *)
            command -v "$PYTHON" >/dev/null 2>&1 || die "no $PYTHON"
            python_version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
            ;;
    esac
    case "$python_version" in
        3.1[1-9]) ;;
        *) die "--python $python_version: the gateway needs Python 3.11 or newer" ;;
    esac
    command -v "$PYTHON" >/dev/null 2>&1 || die "no $PYTHON to build the bundle with"
    tag="cp${python_version/./}"
    mkdir -p "$target" || die "cannot create $target"
    target="$(cd "$target" && pwd)"

    BUILD_DIR="$(mktemp -d)"
    work="$BUILD_DIR"
    venv="$work/venv"
    "$PYTHON" -m venv "$venv" || die "$PYTHON cannot make virtualenvs: sudo apt install python3-venv"
    local pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)
    mkdir -p "$work/wheels"
    if [ -z "$WHEEL" ]; then
        say "building a wheel from $SOURCE"
        "${pip[@]}" wheel --quiet --no-deps --wheel-dir "$work/wheels" "$SOURCE" \
            || die "cannot build the gateway's wheel from $SOURCE"
    else
        cp "$WHEEL" "$work/wheels/"
    fi
    WHEEL="$(ls "$work"/wheels/anpr_gateway-*.whl)"
    version="$(basename "$WHEEL" | cut -d - -f 2)"
    name="anpr-gateway-$version-linux-$PLATFORM-$tag"
    stage="$work/$name"
    mkdir -p "$stage/wheels" "$stage/systemd" "$stage/etc"
    mv "$WHEEL" "$stage/wheels/"
    mapfile -t tags < <(platform_tags "$PLATFORM" "${GLIBC#2.}")
    say "downloading the dependencies for linux $PLATFORM (glibc $GLIBC), Python $python_version"
    "${pip[@]}" download --quiet --only-binary=:all: --dest "$stage/wheels" \
        "${tags[@]}" --python-version "$python_version" --implementation cp \
        --abi "$tag" --abi abi3 --abi none \
        "$stage/wheels/$(basename "$WHEEL")" \
        || die "cannot download every dependency as a wheel for linux $PLATFORM, Python $python_version (above)"

    install -m 0755 "$SOURCE/systemd/install.sh" "$stage/systemd/install.sh"
    install -m 0644 "$SOURCE/systemd/anpr-gateway.service" "$SOURCE/systemd/service-direct.py" \
        "$stage/systemd/"
    install -m 0644 "$SOURCE/etc/gateway.toml" "$stage/etc/gateway.toml"
    install -m 0644 "$SOURCE/README.md" "$stage/README.md"
    cp -R "$SOURCE/docs" "$stage/docs"
    printf 'version=%s\nplatform=linux-%s\nglibc=%s\npython=%s\n' \
        "$version" "$PLATFORM" "$GLIBC" "$python_version" > "$stage/BUNDLE"
    (cd "$stage" && find . -type f ! -name MANIFEST.sha256 | LC_ALL=C sort | sed 's|^\./||' \
        | xargs -d '\n' sha256sum > MANIFEST.sha256)
    tar -C "$work" --owner=0 --group=0 --numeric-owner -czf "$target/$name.tar.gz" "$name"
    (cd "$target" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
    say "wrote $target/$name.tar.gz ($(ls "$stage/wheels" | wc -l) wheels, sha256 $(sha256_of "$target/$name.tar.gz"))"
}

if [ -n "$MAKE_BUNDLE" ]; then
    [ -z "$BUNDLE" ] || die "--make-bundle and --bundle do not go together"
    if [ -n "$WHEEL" ]; then
        [ -f "$WHEEL" ] || die "no such wheel: $WHEEL"
    fi
    make_bundle "$MAKE_BUNDLE"
    exit 0
fi
case "$SERVICE_MODE" in
    systemd|direct) ;;
    *) die "--service-mode $SERVICE_MODE: systemd or direct" ;;
esac
case "$KEEP_COPIES" in
    ""|*[!0-9]*|0) die "--keep-db-copies $KEEP_COPIES: a number, 1 or more" ;;
esac
[ -z "$PLATFORM" ] || die "--platform is for --make-bundle"
[ -z "$GLIBC" ] || die "--glibc is for --make-bundle"

# --- an offline bundle: check and unpack it -----------------------------------------
FIND_LINKS=""
if [ -n "$BUNDLE" ]; then
    [ -z "$WHEEL" ] || die "--bundle and --wheel do not go together"
    [ -z "$REUSE" ] || die "--bundle and --reuse-site-packages do not go together"
    [ -f "$BUNDLE" ] || die "no such bundle: $BUNDLE"
    if [ -f "$BUNDLE.sha256" ]; then
        [ "$(cut -d ' ' -f 1 "$BUNDLE.sha256")" = "$(sha256_of "$BUNDLE")" ] \
            || die "$BUNDLE does not match $BUNDLE.sha256: copy it again"
    fi
    BUNDLE_DIR="$(mktemp -d)"
    tar -xzf "$BUNDLE" -C "$BUNDLE_DIR" --no-same-owner 2>/dev/null \
        || die "$BUNDLE is not a readable bundle (tar cannot unpack it)"
    set -- "$BUNDLE_DIR"/*
    [ $# -eq 1 ] && [ -f "$1/MANIFEST.sha256" ] && [ -f "$1/BUNDLE" ] \
        || die "$BUNDLE is not an anpr-gateway bundle (no MANIFEST.sha256)"
    SOURCE="$1"
    (cd "$SOURCE" && sha256sum --quiet --strict -c MANIFEST.sha256 >/dev/null 2>&1) \
        || die "$BUNDLE: a file does not match MANIFEST.sha256 (damaged or changed bundle)"
    [ "$(cd "$SOURCE" && find . -type f ! -name MANIFEST.sha256 | sed 's|^\./||' | LC_ALL=C sort)" \
        = "$(sed 's/^[0-9a-f]*  //' "$SOURCE/MANIFEST.sha256" | LC_ALL=C sort)" ] \
        || die "$BUNDLE: it holds files MANIFEST.sha256 does not list"
    BUNDLE_PLATFORM="$(sed -n 's/^platform=//p' "$SOURCE/BUNDLE")"
    BUNDLE_PYTHON="$(sed -n 's/^python=//p' "$SOURCE/BUNDLE")"
    [ "$BUNDLE_PLATFORM" = "linux-$(uname -m)" ] \
        || die "$BUNDLE is for $BUNDLE_PLATFORM, this machine is linux-$(uname -m)"
    WHEEL="$(ls "$SOURCE"/wheels/anpr_gateway-*.whl)"
    FIND_LINKS="$SOURCE/wheels"
    say "checked $(basename "$BUNDLE"): $(wc -l < "$SOURCE/MANIFEST.sha256") files match MANIFEST.sha256"
fi

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
BACKUP_DIR="$ROOT$BACKUP_PATH"
DIRECT_PIDFILE="$ROOT/run/anpr-gateway.pid"
DIRECT_LOG="$ROOT/var/log/anpr-gateway.log"
if [ -n "$ROOT" ] && [ "$SERVICE_MODE" = systemd ] && [ "$START_AFTER" -eq 1 ]; then
    die "--start under --root runs the service itself: add --service-mode direct"
fi

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
if [ -n "$BUNDLE" ] && [ "$BUNDLE_PYTHON" != "$PYTHON_VERSION" ]; then
    die "$BUNDLE is for Python $BUNDLE_PYTHON, $PYTHON is $PYTHON_VERSION (--python another, or a bundle for $PYTHON_VERSION)"
fi

# --- the service user ------------------------------------------------------
if [ -n "$ROOT" ] || ! getent passwd "$SERVICE_USER" >/dev/null; then
    system useradd --system --user-group --home-dir "$STATE_PATH" --no-create-home \
        --shell /usr/sbin/nologin --comment "anpr-gateway service" "$SERVICE_USER"
fi
# Serial ports belong to dialout (the unit adds the group too; this is for
# checks such as `sudo -u anpr-gateway ...`).
system usermod --append --groups dialout "$SERVICE_USER"

# --- the service: systemd, or run directly ------------------------------------
# Direct mode (--service-mode direct, for tests and machines without systemd)
# runs the unit's ExecStart itself, as the invoking user, with its paths under
# --root, waiting for READY=1 as systemctl does (libexec/service-direct.py).
SYSTEMD_RUNNING=0
if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
    SYSTEMD_RUNNING=1
fi
direct() { "$PYTHON" "$PREFIX/libexec/service-direct.py" "$@"; }
# A path of the target machine as it is under --root.
under_root() {
    sed -e "s|/opt/anpr-gateway|$PREFIX_PATH_R|g" -e "s|/etc/anpr-gateway|$CONFIG_PATH_R|g" \
        -e "s|/var/lib/anpr-gateway|$STATE_PATH_R|g"
}
PREFIX_PATH_R="$ROOT$PREFIX_PATH"
CONFIG_PATH_R="$ROOT$CONFIG_PATH"
STATE_PATH_R="$ROOT$STATE_PATH"

service_reload() {
    [ "$SERVICE_MODE" = systemd ] || return 0
    if [ -n "$ROOT" ]; then
        system systemctl daemon-reload
        system systemctl enable anpr-gateway.service
    elif [ "$SYSTEMD_RUNNING" -eq 1 ]; then
        systemctl daemon-reload
        systemctl enable --quiet anpr-gateway.service
    else
        say "systemd is not running on this machine: the service was not enabled"
    fi
}
service_active() {
    if [ "$SERVICE_MODE" = direct ]; then
        [ -f "$PREFIX/libexec/service-direct.py" ] && direct status "$DIRECT_PIDFILE"
    else
        [ "$SYSTEMD_RUNNING" -eq 1 ] && systemctl is-active --quiet anpr-gateway.service
    fi
}
service_stop() {
    if [ "$SERVICE_MODE" = direct ]; then
        direct stop "$DIRECT_PIDFILE" 30
    elif [ "$SYSTEMD_RUNNING" -eq 1 ]; then
        systemctl stop anpr-gateway.service
    else
        system systemctl stop anpr-gateway.service
    fi
}
# Start and wait for READY=1: systemctl start does for a Type=notify unit.
service_start() {
    if [ "$SERVICE_MODE" = direct ]; then
        local line
        line="$(sed -n 's/^ExecStart=//p' "$UNIT" | under_root)"
        local -a command
        read -r -a command <<< "$line"
        mkdir -p "$(dirname "$DIRECT_PIDFILE")" "$(dirname "$DIRECT_LOG")"
        direct start "$DIRECT_PIDFILE" "$DIRECT_LOG" "$STATE_DIR" 90 -- "${command[@]}"
    elif [ "$SYSTEMD_RUNNING" -eq 1 ]; then
        systemctl start anpr-gateway.service
    else
        system systemctl start anpr-gateway.service
    fi
}
service_log_hint() {
    if [ "$SERVICE_MODE" = direct ]; then
        printf '%s' "$DIRECT_LOG"
    else
        printf 'journalctl -u anpr-gateway'
    fi
}

# --- releases ------------------------------------------------------------------
# The version a link (current, previous) points at; nothing when it is not one.
release_of() {
    [ -L "$1" ] || return 0
    basename "$(readlink "$1")"
}
# Point `current` at releases/$1 (and `previous` at releases/$2, or nowhere when
# $2 is empty and a third argument says so), each link replaced in one rename.
relink() {
    local link="$1" version="$2"
    ln -sfn "releases/$version" "$link.new"
    mv -T "$link.new" "$link"
}
switch_to() {
    relink "$CURRENT" "$1"
    if [ $# -ge 2 ]; then
        if [ -n "$2" ]; then relink "$PREVIOUS" "$2"; else rm -f "$PREVIOUS"; fi
    fi
}

# A copy of the database before $2 first opens it (the copy belongs to the
# upgrade from $1 to $2), with SQLite's online backup API; the newest
# $KEEP_COPIES copies are kept. Prints the copy's path (nothing when there is
# no database yet).
take_db_copy() {
    local from="$1" to="$2" copy
    [ -f "$STATE_DIR/gateway.db" ] || return 0
    install -d -m 0750 "$BACKUP_DIR"
    copy="$BACKUP_DIR/gateway-$(date -u +%Y%m%dT%H%M%SZ)-from-$from-to-$to.db"
    "$RELEASE/bin/python" -c '
import sys
from pathlib import Path
from gateway.backup import BackupError, copy_database
try:
    version = copy_database(Path(sys.argv[1]), Path(sys.argv[2]), pages=4096, pause=0)
except BackupError as error:
    sys.exit(f"anpr-gateway install: error: {error}")
' "$STATE_DIR/gateway.db" "$copy" >&2 || die "could not copy the database before the upgrade: $from stays"
    # shellcheck disable=SC2012
    ls -1t "$BACKUP_DIR"/gateway-*-from-*-to-*.db | tail -n +"$((KEEP_COPIES + 1))" | while read -r old; do
        rm -f "$old"
    done
    say "copied the database to $copy" >&2
    printf '%s' "$copy"
}

# Put the database copy $1 back; what was there goes to a directory named for
# version $2, whose path is printed.
restore_db_copy() {
    local copy="$1" from="$2" aside name
    aside="$BACKUP_DIR/rolled-back-$(date -u +%Y%m%dT%H%M%SZ)-from-$from"
    install -d -m 0750 "$aside"
    for name in gateway.db gateway.db-wal gateway.db-shm; do
        [ ! -e "$STATE_DIR/$name" ] || mv "$STATE_DIR/$name" "$aside/$name"
    done
    cp "$copy" "$STATE_DIR/.gateway.db.restoring"
    mv "$STATE_DIR/.gateway.db.restoring" "$STATE_DIR/gateway.db"
    system chown "$SERVICE_USER:$SERVICE_USER" "$STATE_PATH/gateway.db" >&2
    printf '%s' "$aside"
}

# Go back from release $1 to release $2 with database copy $3 (may be empty);
# $4 starts the one paragraph that says what happened.
roll_back() {
    local failed="$1" good="$2" copy="$3" why="$4" aside="" started=1 output="" db
    service_stop >/dev/null 2>&1 || true
    switch_to "$good" "$PREVIOUS_BEFORE"
    if [ -n "$copy" ]; then
        aside="$(restore_db_copy "$copy" "$failed")"
        db="with the database as it was before the upgrade (copy $copy); what $failed wrote while it ran is in $aside"
    else
        db="with the database as $failed left it (there was no copy to restore)"
    fi
    if [ "$WAS_ACTIVE" -eq 0 ] && [ "$START_AFTER" -eq 0 ]; then
        say "$why $good is in place again, $db; start it with: systemctl start anpr-gateway."
        return 0
    fi
    output="$(service_start 2>&1)" || started=0
    if [ "$started" -eq 1 ]; then
        say "$why $good runs again, $db. $failed stays installed in $RELEASES/$failed; what it logged is in $(service_log_hint).${5:-}"
        return 0
    fi
    say "$why $good is back in place, $db, but it did not start either (${output##*error: }): see $(service_log_hint)."
    return 1
}

# --- the release ---------------------------------------------------------------
# Each version has its own virtualenv in releases/<version>; `current` points
# at the one the unit runs, `previous` at the one before (for --rollback).
RELEASES="$PREFIX/releases"
CURRENT="$PREFIX/current"
PREVIOUS="$PREFIX/previous"
OLD_VERSION="$(release_of "$CURRENT")"
PREVIOUS_BEFORE="$(release_of "$PREVIOUS")"
WAS_ACTIVE=0

if [ "$ROLLBACK" -eq 1 ]; then
    [ -z "$WHEEL$BUNDLE$REUSE" ] || die "--rollback installs nothing: no --wheel, --bundle or --reuse-site-packages"
    [ -n "$OLD_VERSION" ] || die "nothing is installed in $PREFIX: nothing to roll back"
    if [ -z "$PREVIOUS_BEFORE" ] || [ ! -x "$RELEASES/$PREVIOUS_BEFORE/bin/python" ]; then
        die "no previous release to go back to from $OLD_VERSION (see $RELEASES)"
    fi
    ! service_active || WAS_ACTIVE=1
    # shellcheck disable=SC2012
    COPY="$(ls -1t "$BACKUP_DIR"/gateway-*-from-"$PREVIOUS_BEFORE"-to-"$OLD_VERSION".db 2>/dev/null | head -n 1 || true)"
    [ -n "$COPY" ] || say "no database copy from the upgrade to $OLD_VERSION: the database stays as it is"
    GOOD="$PREVIOUS_BEFORE"
    # Going back is done once: afterwards there is no previous release.
    PREVIOUS_BEFORE=""
    roll_back "$OLD_VERSION" "$GOOD" "$COPY" "rolled back from $OLD_VERSION to $GOOD:"
    exit $?
fi

if [ -n "$WHEEL" ]; then
    VERSION="$(basename "$WHEEL" | cut -d - -f 2)"
else
    VERSION="$(sed -n 's/^__version__ = "\([^"]*\)".*/\1/p' "$SOURCE/gateway/__init__.py")"
fi
case "$VERSION" in
    ""|*[!A-Za-z0-9.+_]*) die "cannot tell the gateway's version (got '$VERSION')" ;;
esac
RELEASE="$RELEASES/$VERSION"

if [ -f "$PREFIX/pyvenv.cfg" ]; then
    # The single-virtualenv layout of earlier releases: the program is
    # replaced by a release; it cannot be rolled back to.
    say "replacing the virtualenv $PREFIX (an earlier layout) by $RELEASE"
    if service_active; then
        service_stop
        START_AFTER=1
    fi
    rm -rf "${PREFIX:?}/bin" "$PREFIX/lib" "$PREFIX/lib64" "$PREFIX/include" "$PREFIX/share" \
        "$PREFIX/pyvenv.cfg" "$PREFIX/docs" "$PREFIX/README.md" "$PREFIX/gateway.toml.reference"
fi

venv_version() {
    sed -n 's/^version\(_info\)\{0,1\} *= *\([0-9]*\.[0-9]*\).*/\2/p' "$1/pyvenv.cfg" 2>/dev/null | head -n 1
}
install -d "$RELEASES"
if [ "$VERSION" != "$OLD_VERSION" ] && [ -e "$RELEASE" ]; then
    # An earlier try of this version, or one rolled back from: made anew.
    rm -rf "$RELEASE"
fi
if [ ! -x "$RELEASE/bin/python" ]; then
    say "making the virtualenv $RELEASE (Python $PYTHON_VERSION)"
    "$PYTHON" -m venv "$RELEASE"
elif [ "$(venv_version "$RELEASE")" != "$PYTHON_VERSION" ] || ! "$RELEASE/bin/python" -c '' 2>/dev/null; then
    # The system Python changed (an OS upgrade): a virtualenv cannot follow.
    say "remaking the virtualenv $RELEASE for Python $PYTHON_VERSION (was $(venv_version "$RELEASE"))"
    "$PYTHON" -m venv --clear "$RELEASE"
fi
VENV_PYTHON="$RELEASE/bin/python"
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
        "$VENV_PYTHON" > "$RELEASE/bin/twistd"
    chmod 0755 "$RELEASE/bin/twistd"
else
    rm -f "$REUSE_PTH"
fi

# --- the gateway -------------------------------------------------------------
PIP=("$VENV_PYTHON" -m pip --disable-pip-version-check --no-input)
if [ -n "$FIND_LINKS" ]; then
    # The bundle's wheels and nothing else: no index, no configuration file,
    # no PIP_* variable may add one.
    PIP=(env PIP_CONFIG_FILE=/dev/null "${PIP[@]}" --isolated)
    PIP_OFFLINE=(--no-index --find-links "$FIND_LINKS")
else
    PIP_OFFLINE=()
fi
if [ -z "$WHEEL" ]; then
    BUILD_DIR="$(mktemp -d)"
    say "building a wheel from $SOURCE"
    "${PIP[@]}" wheel --quiet --no-deps --wheel-dir "$BUILD_DIR" "$SOURCE"
    WHEEL="$(ls "$BUILD_DIR"/anpr_gateway-*.whl)"
fi
say "installing $(basename "$WHEEL") into $RELEASE"
if [ -z "$REUSE" ]; then
    # Dependencies first (new ones, and upgrades the new version asks for)...
    "${PIP[@]}" install "${PIP_OFFLINE[@]}" "$WHEEL"
fi
# ...then the gateway itself again: a rebuilt wheel with an unchanged version
# number would otherwise be "already satisfied" and not replace the old code.
"${PIP[@]}" install "${PIP_OFFLINE[@]}" --quiet --no-deps --force-reinstall "$WHEEL"

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
# (compare it with /etc/anpr-gateway/gateway.toml after an upgrade): the whole
# docs directory, pages, their images and the OpenAPI file.
rm -rf "$RELEASE/docs"
cp -R "$SOURCE/docs" "$RELEASE/docs"
chmod -R u=rwX,go=rX "$RELEASE/docs"
install -m 0644 "$SOURCE/README.md" "$RELEASE/README.md"
install -m 0644 "$SOURCE/etc/gateway.toml" "$RELEASE/gateway.toml.reference"
install -d "$PREFIX/libexec"
install -m 0644 "$SOURCE/systemd/service-direct.py" "$PREFIX/libexec/service-direct.py"

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
service_reload

CONFIG_OK=1
if ! "$RELEASE/bin/anpr-gateway-check-config" "$CONFIG_DIR/gateway.toml"; then
    CONFIG_OK=0
fi

# --- switching to the new release ------------------------------------------------
if [ -z "$OLD_VERSION" ] || [ "$OLD_VERSION" = "$VERSION" ]; then
    # A first install, or this version again: nothing to go back to.
    switch_to "$VERSION"
    if [ -n "$OLD_VERSION" ]; then
        say "reinstalled $VERSION"
    else
        say "installed $VERSION as $CURRENT"
    fi
    if [ "$CONFIG_OK" -eq 0 ]; then
        say "the configuration does not check (above): fix it, then: systemctl restart anpr-gateway"
        exit 1
    fi
    if service_active; then
        if [ "$RESTART" -eq 1 ]; then
            service_stop
            service_start || die "$VERSION did not start: journalctl -u anpr-gateway -n 50"
            say "restarted anpr-gateway (journalctl -u anpr-gateway -f to follow it)"
        else
            say "reinstalled; the running gateway is the old code until: systemctl restart anpr-gateway"
        fi
    elif [ "$START_AFTER" -eq 1 ]; then
        service_start || die "$VERSION did not start: journalctl -u anpr-gateway -n 50"
        say "started anpr-gateway $VERSION"
    elif [ "$NEW_CONFIG" -eq 1 ]; then
        say "next: edit $CONFIG_PATH/gateway.toml, then: systemctl start anpr-gateway"
    else
        say "enabled; start it with: systemctl start anpr-gateway"
    fi
    exit 0
fi

# An upgrade (or a downgrade) from $OLD_VERSION to $VERSION.
if [ "$CONFIG_OK" -eq 0 ]; then
    die "the configuration does not check with $VERSION (above): $OLD_VERSION stays; fix it and run install.sh again"
fi
! service_active || WAS_ACTIVE=1
if [ "$WAS_ACTIVE" -eq 1 ] && [ "$RESTART" -eq 0 ]; then
    # The old version keeps running: the copy is an online one, and what it
    # writes until the restart is not in it.
    COPY="$(take_db_copy "$OLD_VERSION" "$VERSION")"
    switch_to "$VERSION" "$OLD_VERSION"
    say "upgraded to $VERSION; $OLD_VERSION runs until: systemctl restart anpr-gateway (database copy: ${COPY:-none})"
    exit 0
fi
[ "$WAS_ACTIVE" -eq 0 ] || service_stop
COPY="$(take_db_copy "$OLD_VERSION" "$VERSION")"
switch_to "$VERSION" "$OLD_VERSION"
if [ "$WAS_ACTIVE" -eq 0 ] && [ "$START_AFTER" -eq 0 ]; then
    say "upgraded $OLD_VERSION to $VERSION (database copy: ${COPY:-none}); start it with: systemctl start anpr-gateway"
    exit 0
fi
say "starting $VERSION"
REASON=""
if ! START_OUTPUT="$(service_start 2>&1)"; then
    REASON="it did not start (${START_OUTPUT##*error: })"
elif ! CHECK_OUTPUT="$("$RELEASE/bin/anpr-gateway-self-check" --config "$CONFIG_DIR/gateway.toml" 2>&1)"; then
    REASON="its self-check failed (${CHECK_OUTPUT#anpr-gateway-self-check: error: })"
fi
# One paragraph: the reason on one line.
REASON="$(printf '%s' "$REASON" | tr '\n' ' ')"
if [ -z "$REASON" ]; then
    say "$VERSION is ready: ${CHECK_OUTPUT#anpr-gateway-self-check: ok: }"
    say "upgraded $OLD_VERSION to $VERSION (database copy: ${COPY:-none}; install.sh --rollback goes back)"
    exit 0
fi
roll_back "$VERSION" "$OLD_VERSION" "$COPY" \
    "the upgrade from $OLD_VERSION to $VERSION was undone: $REASON." \
    " Fix the cause and run install.sh again." || true
exit 1
