#!/usr/bin/env bash
# Run the benchmarks against a live service started as start.sh starts it (4 workers) and
# print one table of figures and ratios; results go to bench/results/latest.json.
#
# Usage: bench/run.sh [--quick] [--only LIST]
#   --quick  shorter loads (about 4 minutes on 2 cores)
#   --only   comma-separated subset: mcp,rest,footprint,sse,overhead,scaling,store,quality
#            (quality: research quality on Debian's python3.11-doc, installed with apt-get
#            when missing; `--only quality` needs neither wrk, redis nor the FastMCP peer)
# Environment: VENV_DIR (default venv; ./test.sh or ./start.sh create it); PEER_VENV (default
# ~/.cache/mcp-orchestrator/bench-peer: the FastMCP peer's own venv, made from
# bench/requirements-peer.txt when missing or changed).
# Exit codes: 0 done; 1 setup failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REDIS_PID=""

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { log "$*"; exit 1; }
cleanup() {
  if [[ -n "${REDIS_PID}" ]]; then
    kill "${REDIS_PID}" 2>/dev/null || true
  fi
}
trap cleanup EXIT

ensure_tools() {
  local missing=() tool
  for tool in wrk redis-server; do
    command -v "${tool}" >/dev/null || missing+=("${tool}")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]}"
  apt-get update -qq >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || die "could not install ${missing[*]}"
}

start_redis() {
  local port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  redis-server --port "${port}" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
  REDIS_PID=$!
  sleep 0.5
  REDIS_URL="redis://127.0.0.1:${port}/0"
}

ensure_peer() {
  local stamp="${PEER_VENV}/.requirements.sha256" want
  want="$(sha256sum "${ROOT}/bench/requirements-peer.txt" | cut -d' ' -f1)"
  if [[ -x "${PEER_VENV}/bin/python" && -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
    return 0
  fi
  log "installing the FastMCP peer into ${PEER_VENV}"
  python3 -m venv "${PEER_VENV}" || die "cannot create ${PEER_VENV}"
  "${PEER_VENV}/bin/pip" install -q -r "${ROOT}/bench/requirements-peer.txt" >/dev/null || die "peer install failed"
  printf '%s\n' "${want}" >"${stamp}"
}

ensure_corpus() {
  [[ -d /usr/share/doc/python3.11/html/library ]] && return 0
  log "installing the quality corpus (Debian package python3.11-doc)"
  apt-get update -qq >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11-doc >/dev/null \
    || die "could not install python3.11-doc"
}

# The value of --only, or "" when every benchmark runs.
selected() {
  local previous=""
  for arg in "$@"; do
    [[ "${previous}" == "--only" ]] && { printf '%s' "${arg}"; return 0; }
    [[ "${arg}" == --only=* ]] && { printf '%s' "${arg#--only=}"; return 0; }
    previous="${arg}"
  done
}

main() {
  local venv="${VENV_DIR:-venv}" only
  [[ "${venv}" == /* ]] || venv="${ROOT}/${venv}"
  [[ -x "${venv}/bin/python" ]] || die "no venv at ${venv}: run ./test.sh first"
  PEER_VENV="${PEER_VENV:-${HOME}/.cache/mcp-orchestrator/bench-peer}"
  only="$(selected "$@")"
  if [[ -z "${only}" || ",${only}," == *,quality,* ]]; then
    ensure_corpus
  fi
  cd "${ROOT}"
  if [[ "${only}" == "quality" ]]; then
    "${venv}/bin/python" bench/bench.py "$@"
    return
  fi
  ensure_tools
  ensure_peer
  start_redis
  "${venv}/bin/python" bench/bench.py --redis-url "${REDIS_URL}" --peer-python "${PEER_VENV}/bin/python" "$@"
}

main "$@"
