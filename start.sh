#!/usr/bin/env bash
# Run mcp-orchestrator: virtual environment, pinned dependencies (installed only when
# requirements.txt changed), then gunicorn with gunicorn.conf.py in the foreground.
#
# Usage: ./start.sh [--help] [--prepare]
#   --prepare  only the venv, the dependencies and DATA_DIR, then exit (service_manager.py
#              runs it first, so a first install is not timed as the service's start)
# Environment: see .env.example (PORT, BIND_ADDRESS, WORKERS, VENV_DIR, DATA_DIR,
#   SKIP_PIP_INSTALL, ...). A .env file beside this script is read for variables not
#   already set in the environment.
# Exit codes: 0 clean stop, 1 setup failed (no python3, pip failed, bad configuration),
#   otherwise gunicorn's own exit code.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
}

# shellcheck source=scripts/dotenv.sh
source "${ROOT}/scripts/dotenv.sh"

ensure_venv() {
  command -v python3 >/dev/null || die "python3 not found"
  if [[ ! -x "${VENV}/bin/python" ]]; then
    log "creating virtual environment in ${VENV}"
    python3 -m venv "${VENV}" || die "could not create ${VENV}"
  fi
}

install_requirements() {
  local stamp="${VENV}/.requirements.sha256" want
  if [[ "${SKIP_PIP_INSTALL:-0}" == "1" ]]; then
    log "SKIP_PIP_INSTALL=1: not installing dependencies"
    return 0
  fi
  want="$(sha256sum < "${ROOT}/requirements.txt" | cut -d' ' -f1)"
  if [[ -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
    return 0
  fi
  log "installing dependencies from requirements.txt"
  "${VENV}/bin/pip" install --quiet --disable-pip-version-check -r "${ROOT}/requirements.txt" \
    || die "pip install failed"
  printf '%s\n' "${want}" > "${stamp}"
}

main() {
  if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
    usage
    exit 0
  fi
  cd "${ROOT}"
  load_dotenv "${ROOT}"
  VENV="${VENV_DIR:-venv}"
  [[ "${VENV}" == /* ]] || VENV="${ROOT}/${VENV}"
  ensure_venv
  install_requirements
  mkdir -p "${DATA_DIR:-./data}" || die "DATA_DIR ${DATA_DIR:-./data} is not writable"
  [[ "${1:-}" == "--prepare" ]] && exit 0
  log "starting gunicorn on ${BIND_ADDRESS:-127.0.0.1}:${PORT:-5060}"
  exec "${VENV}/bin/gunicorn" --config "${ROOT}/gunicorn.conf.py"
}

main "$@"
