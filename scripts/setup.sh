#!/usr/bin/env bash
# One-command, idempotent setup: Debian packages, .venv, pinned Python packages, aihwkit 1.2.0
# built from source once (the wheel is cached outside the repo), and the project itself.
# A second run on a machine already set up only checks a stamp and exits in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
VENV=${MPS_VENV:-.venv}
WHEELS=${MPS_WHEEL_CACHE:-$HOME/.cache/mps/wheels}
AIHWKIT_VERSION=1.2.0
STAMP="$VENV/.mps-setup-stamp"

log() { echo "[setup] $*"; }

# --- Debian packages -------------------------------------------------------------------------
missing=()
for pkg in libopenblas-dev dataset-fashion-mnist; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- up to date? ---------------------------------------------------------------------------------
want=$(cat requirements/*.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import aihwkit, mps" 2>/dev/null; then
  log "up to date ($VENV)"
  exit 0
fi

# --- venv and pinned packages ---------------------------------------------------------------------
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip wheel setuptools >/dev/null
log "installing pinned requirements"
"${PIP[@]}" install -c requirements/constraints.txt -r requirements/main.txt -r requirements/aihwkit-build.txt

# --- aihwkit: source-only on PyPI; build once, cache the wheel ----------------------------------
wheel=$(ls "$WHEELS"/aihwkit-"$AIHWKIT_VERSION"-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
  log "building aihwkit $AIHWKIT_VERSION from source (about 3 minutes; cached in $WHEELS)"
  mkdir -p "$WHEELS"
  # its build calls stubgen (from mypy), which must be on PATH
  PATH="$PWD/$VENV/bin:$PATH" "${PIP[@]}" wheel --no-build-isolation --no-deps \
      -c requirements/constraints.txt "aihwkit==$AIHWKIT_VERSION" -w "$WHEELS"
  wheel=$(ls "$WHEELS"/aihwkit-"$AIHWKIT_VERSION"-*.whl | head -1)
fi
# --no-deps: aihwkit declares torchvision, which does not import beside the CPU torch build
# and which nothing we use from aihwkit needs; its real runtime deps are in requirements/main.txt.
"${PIP[@]}" install --no-deps --force-reinstall "$wheel"

log "installing the project (editable)"
"${PIP[@]}" install --no-deps -e .
"$VENV/bin/python" -c "import aihwkit, mps; print('[setup] aihwkit', aihwkit.__version__, 'ok')"
echo "$want" > "$STAMP"
