#!/usr/bin/env bash
# Installs what the tests need when it is missing: Mesa >= 25 lavapipe (Vulkan on the CPU) from
# bookworm-backports, since Debian 12's Mesa 22 is 3-8x slower; plus the Vulkan loader and tools;
# and Xvfb for the viewer's window test.
set -euo pipefail
# The viewer's window test runs `qwm view --screenshot` under xvfb-run (an X server in memory).
if ! command -v xvfb-run >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xauth >/dev/null
  echo "deps: installed xvfb"
fi
have_lvp_25() {
  local v
  v=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
  [ -n "$v" ] && dpkg --compare-versions "$v" ge 25 && ldconfig -p | grep -q libvulkan.so.1
}
if have_lvp_25; then
  echo "deps: mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers) already present"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
  cat >/etc/apt/sources.list.d/qwm-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
apt-get update -qq
apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers >/dev/null
apt-get install -y -qq libvulkan1 vulkan-tools >/dev/null || apt-get install -y -qq libvulkan1 >/dev/null
echo "deps: installed mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
