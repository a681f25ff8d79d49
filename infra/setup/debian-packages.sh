#!/usr/bin/env bash
# The Debian packages the embedded stack needs. As root: installs the missing ones (once; a second
# run finds nothing missing and does no work). Not root: names what is missing and how to install it.
set -euo pipefail

packages=(
  postgresql                      # PostgreSQL server binaries for the private cluster
  gstreamer1.0-rtsp               # RTSP server for the demo cameras
  gir1.2-gst-rtsp-server-1.0
  python3-gi
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad
  opencv-doc                      # vtest.avi: real pedestrians for the room-camera scenes
  chromium                        # headless browser for the dashboard end-to-end tests
)

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "setup: missing Debian packages: ${missing[*]} — run as root: apt-get install --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "setup: missing packages ${missing[*]} and no apt-get on this machine: install their equivalents by hand" >&2
  exit 1
fi
echo "setup: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || { echo "setup: apt-get update failed: check the network to the Debian mirror" >&2; exit 1; }
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || { echo "setup: apt-get install ${missing[*]} failed: run it by hand to see why" >&2; exit 1; }
