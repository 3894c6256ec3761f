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
BUNDLE=""
MAKE_BUNDLE=""
PLATFORM=""
GLIBC=""

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
    install -m 0644 "$SOURCE/systemd/anpr-gateway.service" "$stage/systemd/"
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
say "installing $(basename "$WHEEL") into $PREFIX"
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
# (compare it with /etc/anpr-gateway/gateway.toml after an upgrade).
# The whole docs directory: pages, their images and the OpenAPI file.
rm -rf "$PREFIX/docs"
cp -R "$SOURCE/docs" "$PREFIX/docs"
chmod -R u=rwX,go=rX "$PREFIX/docs"
install -m 0644 "$SOURCE/README.md" "$PREFIX/README.md"
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
