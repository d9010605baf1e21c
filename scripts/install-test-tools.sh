#!/usr/bin/env bash
# Installs the external oracles the test-suite checks layerlab against:
#   cc (host C compiler), gcc-arm-none-eabi + newlib + qemu-system-arm (Cortex-M build and run),
#   LibreOffice Calc (recalculates the formula workbooks), Chromium (layerlab view in a real browser,
#   driven by Playwright from the test extra), and an nnabla venv on Python 3.10.
# Debian packages are installed only when missing and only when running as root; otherwise the
# tests that need them skip locally (and fail in CI, where LAYERLAB_REQUIRE_TOOLS=1).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v make >/dev/null || need+=(make)
command -v arm-none-eabi-gcc >/dev/null || need+=(gcc-arm-none-eabi)
[ -e /usr/lib/arm-none-eabi/newlib/libc.a ] || [ -d /usr/lib/arm-none-eabi/newlib ] || need+=(libnewlib-arm-none-eabi)
command -v qemu-system-arm >/dev/null || need+=(qemu-system-arm)
command -v soffice >/dev/null || need+=(libreoffice-calc)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install-test-tools: apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "install-test-tools: missing ${need[*]} (not root or no apt-get): those tests will skip" >&2
  fi
fi

if [ -f scripts/setup-nnabla.sh ]; then
  bash scripts/setup-nnabla.sh
fi
