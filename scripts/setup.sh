#!/usr/bin/env bash
# Installs everything the gateway, its tests and its benchmarks need on a fresh Debian machine.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# Usage: scripts/setup.sh [--test]
#   without flags: what building and running the gateway needs;
#   --test: also the real clients, servers and tools the test suite and benchmarks drive.
APT_PKGS=(
  # build
  pkg-config gcc libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  # media runtime
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-vaapi
)
WITH_TESTS=0
[ "${1:-}" = "--test" ] && WITH_TESTS=1
if [ "$WITH_TESTS" = 1 ]; then
  APT_PKGS+=(
    # real S3 clients, players and servers used by the tests and benchmarks
    ffmpeg mpv awscli rclone s3cmd curl postgresql nginx-light wrk time procps iproute2 docker-compose attr
    # VLC (without its GUI) plays the HLS streams, as mpv and ffmpeg do
    vlc-bin vlc-plugin-base
    # deployment tests: self-signed certificates, `systemd-analyze verify` of the unit
    openssl systemd
    # the web app's tests: Debian's Chromium, driven by Selenium through chromium-driver
    chromium chromium-driver
    # the benchmark's HLS reference (perf/gst_seek.py): GStreamer from the system Python
    python3-gi gir1.2-gstreamer-1.0
  )
  command -v node >/dev/null || APT_PKGS+=(nodejs npm)
  python3 -m pip --version >/dev/null 2>&1 || APT_PKGS+=(python3-pip)
fi

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is missing: install a Rust toolchain (rustup) first" >&2
  exit 1
fi

[ "$WITH_TESTS" = 1 ] || exit 0

# Python clients for the conformance suite (pinned so results are reproducible).
pip_install() { python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "$@"; }
pip_install -r conformance-tests/requirements.txt 2>/dev/null \
  || pip_install --break-system-packages -r conformance-tests/requirements.txt

# AWS SDK for JavaScript v3 for the JS client cases.
# package-lock.json pins the whole tree; `npm ci` installs exactly that.
if [ -f conformance-tests/js/package.json ] && [ ! -d conformance-tests/js/node_modules/@aws-sdk/client-s3 ]; then
  if [ -f conformance-tests/js/package-lock.json ]; then
    (cd conformance-tests/js && npm ci --no-audit --no-fund --silent)
  else
    (cd conformance-tests/js && npm install --no-audit --no-fund --silent)
  fi
fi

# The web app's pinned browser packages (hls.js, aws4fetch): the test compares them with the
# copies committed in web/app/vendor/ (the build itself never needs npm).
if [ ! -d web/node_modules/hls.js ] || [ ! -d web/node_modules/aws4fetch ]; then
  (cd web && npm ci --no-audit --no-fund --silent)
fi
