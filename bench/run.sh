#!/usr/bin/env bash
# Run the benchmarks against a live service started as start.sh starts it (4 workers) and
# print one table of figures and ratios; results go to bench/results/latest.json.
#
# Usage: bench/run.sh [--quick] [--only LIST]
#   --quick  shorter loads (about 4 minutes on 2 cores)
#   --only   comma-separated subset: mcp,rest,footprint,sse,overhead,scaling,store,soak,report,quality
#            (quality: research quality on Debian's python3.11-doc, installed with apt-get
#            when missing; `--only quality` needs neither wrk, redis nor the FastMCP peer)
# Environment: VENV_DIR (default venv; ./test.sh or ./start.sh create it); PEER_VENV (default
# ~/.cache/mcp-orchestrator/bench-peer: the FastMCP peer's own venv, made from
# bench/requirements-peer.txt when missing or changed).
#
# Sets up what the selected benchmarks need, as start.sh does: the venv with
# requirements-dev.txt (shared with ./test.sh), redis-server, and only for mcp and rest wrk
# (apt-get), only for mcp the peer's venv. Smallest run: bench/run.sh --quick --only store.
# Exit codes: 0 done; 1 setup failed; 2 usage.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REDIS_PID=""

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { log "$*"; exit 1; }

# shellcheck source=scripts/devenv.sh
source "${ROOT}/scripts/devenv.sh"

cleanup() {
  if [[ -n "${REDIS_PID}" ]]; then
    kill "${REDIS_PID}" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# The benchmarks --only selects, one per line, or "all".
selected() {
  local only="all"
  while (($#)); do
    case "$1" in
      --only) only="${2:-}"; shift ;;
      --only=*) only="${1#--only=}" ;;
    esac
    shift
  done
  tr ',' '\n' <<<"${only}"
}

wants() { [[ "${SELECTED}" == "all" ]] || grep -qx "$1" <<<"${SELECTED}"; }

ensure_tools() {
  local missing=() tool tools=(redis-server)
  if wants mcp || wants rest; then
    tools+=(wrk)
  fi
  for tool in "${tools[@]}"; do
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

main() {
  local venv="${VENV_DIR:-venv}" peer_args=()
  [[ "${venv}" == /* ]] || venv="${ROOT}/${venv}"
  SELECTED="$(selected "$@")"
  ensure_dev_venv "${venv}" "${ROOT}"
  if wants quality; then
    ensure_corpus
  fi
  cd "${ROOT}"
  if [[ "${SELECTED}" == "quality" ]]; then  # needs neither wrk, redis nor the peer
    "${venv}/bin/python" bench/bench.py "$@"
    return
  fi
  ensure_tools
  if wants mcp; then
    PEER_VENV="${PEER_VENV:-${HOME}/.cache/mcp-orchestrator/bench-peer}"
    ensure_peer
    peer_args=(--peer-python "${PEER_VENV}/bin/python")
  fi
  start_redis
  "${venv}/bin/python" bench/bench.py --redis-url "${REDIS_URL}" "${peer_args[@]}" "$@"
}

main "$@"
