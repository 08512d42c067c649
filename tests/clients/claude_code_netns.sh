#!/usr/bin/env bash
# Claude Code against the service, all inside the network namespace this script is started
# in (`unshare -n`, by tests/clients/test_claude_code.py): only loopback is up, so neither
# Claude Code nor the service can send a packet, or a DNS query, off this machine.
#
# Starts an open service (no keys), a keyed one (API_KEYS) and Caddy with deploy/Caddyfile in
# front of the keyed one; registers each with `claude mcp add --transport http` (the keyed
# ones with an X-API-Key header, and once without it); prints `claude mcp list`.
#
# Environment: ROOT (the repository), PYTHON_PREFIX (the venv), WORK (a scratch directory),
# CLAUDE (the claude binary), API_KEY. Exit codes: 0 listed, 1 a step failed.
set -euo pipefail

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { log "$*"; exit 1; }

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "${pid}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}

start_service() {  # name port [extra env...]
  local name="$1" port="$2"
  shift 2
  env PORT="${port}" DATA_DIR="${WORK}/${name}" VENV_DIR="${PYTHON_PREFIX}" SKIP_PIP_INSTALL=1 WORKERS=2 \
    LOG_FORMAT=text RATE_LIMIT_ENABLED=0 "$@" "${ROOT}/start.sh" >"${WORK}/${name}.log" 2>&1 &
  PIDS+=("$!")
}

wait_for() {  # url
  local _
  for _ in $(seq 150); do
    curl -sf -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.2
  done
  die "no answer from $1"
}

main() {
  [[ -n "${ROOT:-}" && -n "${PYTHON_PREFIX:-}" && -n "${WORK:-}" && -n "${CLAUDE:-}" && -n "${API_KEY:-}" ]] \
    || die "ROOT, PYTHON_PREFIX, WORK, CLAUDE and API_KEY are required"
  trap cleanup EXIT
  ip link set lo up
  start_service open 5060
  start_service keyed 5061 API_KEYS="claude:${API_KEY}"
  env SITE_ADDRESS=:8080 UPSTREAM=127.0.0.1:5061 CADDY_ADMIN=127.0.0.1:2019 HOME="${WORK}" \
    XDG_DATA_HOME="${WORK}" XDG_CONFIG_HOME="${WORK}" \
    caddy run --config "${ROOT}/deploy/Caddyfile" --adapter caddyfile >"${WORK}/caddy.log" 2>&1 &
  PIDS+=("$!")
  wait_for http://127.0.0.1:5060/health
  wait_for http://127.0.0.1:5061/health
  wait_for http://127.0.0.1:8080/mcp/health/live

  # design: Claude Code keeps its configuration under HOME; a scratch one leaves the user's alone.
  export HOME="${WORK}/home" DISABLE_AUTOUPDATER=1 DISABLE_TELEMETRY=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1
  mkdir -p "${HOME}/project"
  cd "${HOME}/project"
  "${CLAUDE}" mcp add --transport http direct http://127.0.0.1:5060/mcp >&2
  "${CLAUDE}" mcp add --transport http keyed http://127.0.0.1:5061/mcp --header "X-API-Key: ${API_KEY}" >&2
  "${CLAUDE}" mcp add --transport http caddy http://localhost:8080/mcp --header "X-API-Key: ${API_KEY}" >&2
  "${CLAUDE}" mcp add --transport http keyless http://127.0.0.1:5061/mcp >&2
  "${CLAUDE}" mcp list
  # Nothing but loopback is reachable from here: an outside address fails at once.
  if curl -s -o /dev/null --max-time 3 http://192.0.2.1/; then
    die "an address outside loopback answered: the namespace is not isolated"
  fi
  printf 'isolated: yes\n'
}

main "$@"
