#!/usr/bin/env bash
# Run mcp-orchestrator: virtual environment, pinned dependencies (installed only when
# requirements.txt changed), then gunicorn with gunicorn.conf.py in the foreground.
#
# Usage: ./start.sh [--help] [--prepare]
#   --prepare  only the venv, the dependencies and DATA_DIR, then exit (service_manager.py
#              runs it first, so a first install is not timed as the service's start)
# Environment: see .env.example (PORT, BIND_ADDRESS, WORKERS, VENV_DIR, DATA_DIR,
#   SKIP_PIP_INSTALL, ...). A .env file beside this script is read for variables not
#   already set in the environment (syntax: mcp/envfile.py; a line it does not
#   understand stops the start). Every setting is checked before gunicorn starts.
# Exit codes: 0 clean stop, 1 setup failed (no python3, pip failed, bad configuration),
#   2 usage, otherwise gunicorn's own exit code.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# design: with LOG_FORMAT=json (the default) this script's lines have the app's JSON shape,
# so every line the service writes to stderr parses.
log() {
  local level="${LOG_LEVEL_OF_LINE:-INFO}" message="$*"
  if [[ "${LOG_FORMAT:-json}" == "json" ]]; then
    message="${message//\\/\\\\}"
    message="${message//\"/\\\"}"
    printf '{"time": "%s", "level": "%s", "name": "start.sh", "message": "%s"}\n' \
      "$(date '+%Y-%m-%d %H:%M:%S,%3N')" "${level}" "${message}" >&2
  else
    printf '%s: %s\n' "${0##*/}" "${message}" >&2
  fi
}
die() { LOG_LEVEL_OF_LINE=ERROR log "$*"; exit 1; }

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
  if truthy "${SKIP_PIP_INSTALL:-0}"; then
    log "SKIP_PIP_INSTALL=${SKIP_PIP_INSTALL}: not installing dependencies"
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

check_settings() {
  local problems
  if ! problems="$("${VENV}/bin/python" -m mcp.settings --check "${ROOT}/.env" 2>&1)"; then
    while IFS= read -r line; do LOG_LEVEL_OF_LINE=ERROR log "${line}"; done <<< "${problems}"
    die "refusing to start: fix the settings above (./preflight.sh checks them too)"
  fi
}

main() {
  local prepare=0
  case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    --prepare) prepare=1 ;;
    "") ;;
    *) usage >&2; log "unknown argument: $1 (configuration comes from the environment and .env)"; exit 2 ;;
  esac
  cd "${ROOT}"
  load_dotenv "${ROOT}" || die "refusing to start: ${ROOT}/.env has a line start.sh does not understand"
  check_keys
  VENV="${VENV_DIR:-venv}"
  [[ "${VENV}" == /* ]] || VENV="${ROOT}/${VENV}"
  ensure_venv
  install_requirements
  check_settings
  check_report_libraries
  mkdir -p "${DATA_DIR:-./data}" || die "DATA_DIR ${DATA_DIR:-./data} is not writable"
  ((prepare)) && exit 0
  # design: glibc gives threads that allocate at once heaps of their own (up to 8 per core),
  # and memory freed in one is not reused by the others: a worker's stream and store threads
  # held several MB more than they use (issue 19). Two arenas keep that small; the environment wins.
  export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
  log "starting gunicorn on ${BIND_ADDRESS:-127.0.0.1}:${PORT:-5060}"
  exec "${VENV}/bin/gunicorn" --config "${ROOT}/gunicorn.conf.py"
}

main "$@"
