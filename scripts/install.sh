#!/usr/bin/env bash
# Install everything mlff-ins needs on a fresh Debian/Ubuntu machine:
# CP2K and Chromium (Debian packages, for `mlff-ins label` and the web page's browser test),
# torch (the CPU wheel torch==2.13.0 on machines without an NVIDIA GPU; the default build where
# nvidia-smi exists), then this package.
set -euo pipefail
cd "$(dirname "$0")/.."
# CP2K for `mlff-ins label`; Debian's Chromium and ChromeDriver for the browser test of
# `mlff-ins serve` (tests/test_web_browser.py)
APT=""
command -v cp2k_shell.psmp >/dev/null 2>&1 || APT="$APT cp2k cp2k-data"
{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || APT="$APT chromium chromium-driver"
if [ -n "$APT" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $APT >/dev/null
fi
if ! python -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    python -m pip install -q torch
  else
    python -m pip install -q torch==2.13.0
  fi
fi
python -m pip install -q -e ".[test]"
