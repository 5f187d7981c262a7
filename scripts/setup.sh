#!/usr/bin/env bash
# Set up everything speech2lip needs, idempotently:
#   1. Debian packages ffmpeg (ffmpeg + ffprobe, libx264, aac) and espeak-ng, if missing;
#   2. a Python 3.11 virtual environment with the pinned requirements (rebuilt only when
#      requirements.txt or the interpreter change: a hash is kept inside it);
#   3. speech2lip itself, installed editable from this checkout (cheap, done every time so a
#      shared environment always points at the current clone).
# Usage: scripts/setup.sh [VENV]   (default: .venv; env SPEECH2LIP_PYTHON picks the interpreter)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$root/.venv}"
python="${SPEECH2LIP_PYTHON:-python3.11}"

say() { printf '[setup] %s\n' "$*" >&2; }

# --- 1. system packages -----------------------------------------------------------------
need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
ldconfig -p 2>/dev/null | grep -q 'libespeak-ng.so.1' || need+=(libespeak-ng1)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      say "missing system packages: ${need[*]}; install them as root: apt-get install ${need[*]}"
      exit 1
    fi
  fi
  say "installing system packages: ${need[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >/dev/null
fi

# --- 2. virtual environment ---------------------------------------------------------------
command -v "$python" >/dev/null 2>&1 || { say "$python not found: speech2lip needs Python 3.11"; exit 1; }
want="$( (cat "$root/requirements.txt"; "$python" -VV) | sha256sum | cut -c1-16)"
stamp="$venv/.speech2lip-deps"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  say "environment up to date: $venv"
else
  say "building the Python environment in $venv (a few minutes the first time)"
  # The stamp is written last: an interrupted build is simply rebuilt next time.
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade "pip>=24" setuptools wheel 2>&1 | grep -v '^WARNING: Location' || true
  "$venv/bin/pip" install -q -r "$root/requirements.txt" 2>&1 | grep -v '^WARNING: Location' || true
  "$venv/bin/python" -c "import torch, torchvision, mediapipe, cv2, snakemake, h5py, lpips" \
    || { say "the environment in $venv is broken (see above)"; exit 1; }
  echo "$want" >"$stamp"
fi

# --- 3. the package itself ------------------------------------------------------------------
log="$(mktemp)"
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$root" >"$log" 2>&1 \
  || { grep -v '^WARNING: Location' "$log" >&2; rm -f "$log"; say "installing speech2lip failed"; exit 1; }
rm -f "$log"
say "ready: activate with 'source $venv/bin/activate'"
