#!/usr/bin/env bash
# Install everything mlff-ins needs on a fresh Debian/Ubuntu machine:
# CP2K (Debian packages, for `mlff-ins label`), torch (the CPU wheel torch==2.13.0 on machines
# without an NVIDIA GPU; the default build where nvidia-smi exists), then this package.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cp2k_shell.psmp >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cp2k cp2k-data >/dev/null
fi
if ! python -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    python -m pip install -q torch
  else
    python -m pip install -q torch==2.13.0
  fi
fi
python -m pip install -q -e ".[test]"
