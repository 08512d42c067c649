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
# shellcheck source=scripts/public_settings.sh
source "${ROOT}/scripts/public_settings.sh"

check_keys() {
  local public
  public="$(public_settings_without_keys)"
  [[ -z "${public}" ]] || die "${public// /, } set without API_KEYS or API_KEYS_FILE: they serve remote clients, and without keys the service serves local ones only (set keys, or unset them)"
}
# shellcheck source=scripts/report_libs.sh
source "${ROOT}/scripts/report_libs.sh"

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

check_report_libraries() {
  # design: a warning, not a stop: everything but PDF reports works without these.
  local missing
  missing="$(missing_report_packages | tr '\n' ' ')"
  [[ -z "${missing}" ]] && return 0
  log "warning: PDF reports will answer 503 until these Debian packages are installed:" \
    "sudo apt-get install ${missing% }"
}

main() {
  if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
    usage
    exit 0
  fi
  cd "${ROOT}"
  load_dotenv "${ROOT}"
  check_keys
  VENV="${VENV_DIR:-venv}"
  [[ "${VENV}" == /* ]] || VENV="${ROOT}/${VENV}"
  ensure_venv
  install_requirements
  check_report_libraries
  mkdir -p "${DATA_DIR:-./data}" || die "DATA_DIR ${DATA_DIR:-./data} is not writable"
  [[ "${1:-}" == "--prepare" ]] && exit 0
  log "starting gunicorn on ${BIND_ADDRESS:-127.0.0.1}:${PORT:-5060}"
  exec "${VENV}/bin/gunicorn" --config "${ROOT}/gunicorn.conf.py"
}

main "$@"
