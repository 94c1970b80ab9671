#!/usr/bin/env bash
# Installs what the tests need when it is missing: Mesa >= 25 lavapipe (Vulkan on the CPU) from
# bookworm-backports, since Debian 12's Mesa 22 is 3-8x slower; plus the Vulkan loader and tools,
# the SPIR-V / GLSL validators, Xvfb for the viewer's window test, and Debian's Slurm
# (slurm-wlm) with munge for the study's job-array test.
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
export DEBIAN_FRONTEND=noninteractive
# Shader validators for tests/shader_portability.rs (Khronos spirv-val, glslangValidator): the
# SPIR-V and GLSL that naga writes for every kernel are checked by the reference tools.
if ! command -v spirv-val >/dev/null || ! command -v glslangValidator >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq spirv-tools glslang-tools >/dev/null
  echo "deps: installed spirv-tools and glslang-tools"
fi
# Slurm and munge for the study's job-array test (tests/study_slurm.rs; .ci/slurm-up.sh starts
# them). Debian's policy-rc.d in containers keeps the packages from starting services.
if ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq slurm-wlm munge >/dev/null
  echo "deps: installed slurm-wlm $(dpkg-query -W -f='${Version}' slurmctld) and munge"
fi
if have_lvp_25; then
  echo "deps: mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers) already present"
  exit 0
fi
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
