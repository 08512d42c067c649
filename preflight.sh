#!/usr/bin/env bash
# Check a host before start or deploy: one line per check (ok / FAIL and why).
#
# Usage: ./preflight.sh [--help]
# Environment: the service's own (PORT, BIND_ADDRESS, DATA_DIR, STORE_URL, VENV_DIR, API_KEYS,
#   API_KEYS_FILE, TRUSTED_PROXIES, ALLOWED_HOSTS, PUBLIC_BASE_PATH, CORS_ORIGINS, OAUTH_ISSUER,
#   OAUTH_BUILTIN, LLM_PROVIDER and provider keys, DOCS_DIR, THREADS, STREAM_RESERVE_THREADS,
#   MAX_STREAMS); a .env beside this script is read for variables not already set, as
#   start.sh does.
# Exit codes: 0 every check passed; 1 a check failed (the last line names which).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FAILED=()
MIN_FREE_MB=200

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
ok() { printf 'ok    %-14s %s\n' "$1" "$2"; }
fail() { printf 'FAIL  %-14s %s\n' "$1" "$2"; FAILED+=("$1"); }

usage() { sed -n '2,/^# Exit codes/p' "$0" | sed 's/^# \{0,1\}//'; }

# shellcheck source=scripts/dotenv.sh
source "${ROOT}/scripts/dotenv.sh"
# shellcheck source=scripts/public_settings.sh
source "${ROOT}/scripts/public_settings.sh"
# shellcheck source=scripts/report_libs.sh
source "${ROOT}/scripts/report_libs.sh"

check_python() {
  local version
  if ! version="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"; then
    fail python "python3 not found"
  elif python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    ok python "python3 ${version}"
  else
    fail python "python3 ${version} is older than 3.11"
  fi
}

check_venv() {
  local missing
  if [[ ! -x "${VENV}/bin/python" ]]; then
    fail venv "${VENV} has no python (run ./start.sh once, or set VENV_DIR)"
    return
  fi
  # design: every pinned requirement must be installed at its pinned version.
  if missing="$("${VENV}/bin/python" - "${ROOT}/requirements.txt" <<'EOF'
import importlib.metadata as md, re, sys
bad = []
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    m = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line)
    if not m:
        continue
    try:
        have = md.version(m.group(1))
    except md.PackageNotFoundError:
        have = None
    if have != m.group(2):
        bad.append(f"{m.group(1)} (want {m.group(2)}, have {have})")
print("; ".join(bad))
sys.exit(1 if bad else 0)
EOF
)"; then
    ok venv "${VENV}: every pinned dependency installed"
  else
    fail venv "${VENV}: ${missing}"
  fi
}

check_report_libraries() {
  local missing
  missing="$(missing_report_packages | tr '\n' ' ')"
  if [[ -z "${missing}" ]]; then
    ok reports "PDF report libraries present (pango, harfbuzz, DejaVu fonts)"
  else
    fail reports "PDF reports need Debian packages: sudo apt-get install ${missing% }"
  fi
}

check_port() {
  local holder
  [[ "${PORT}" =~ ^[0-9]+$ ]] || { fail port "PORT=${PORT} is not a port number"; return; }
  if ! (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; then
    ok port "${PORT} is free"
    return
  fi
  holder="$(curl -s --max-time 2 "http://127.0.0.1:${PORT}/health/live" || true)"
  if [[ "${holder}" == *'"service":"mcp-orchestrator"'* ]]; then
    ok port "${PORT} is held by mcp-orchestrator (this service)"
  else
    fail port "${PORT} is in use by another program"
  fi
}

check_data_dir() {
  local free_mb
  if ! mkdir -p "${DATA_DIR}" 2>/dev/null || ! touch "${DATA_DIR}/.preflight" 2>/dev/null; then
    fail data_dir "${DATA_DIR} is not writable"
    return
  fi
  rm -f "${DATA_DIR}/.preflight"
  free_mb="$(df -Pm "${DATA_DIR}" | awk 'NR==2 {print $4}')"
  if ((free_mb < MIN_FREE_MB)); then
    fail disk "${free_mb} MB free under ${DATA_DIR} (want ${MIN_FREE_MB})"
  else
    ok data_dir "${DATA_DIR} writable, ${free_mb} MB free"
  fi
}

check_store() {
  local url="${STORE_URL:-}" detail
  if [[ -z "${url}" || "${url}" == sqlite://* ]]; then
    ok store "sqlite under ${DATA_DIR} (created on start)"
    return
  fi
  if [[ ! -x "${VENV}/bin/python" ]]; then
    fail store "cannot check ${url%%://*} without the venv"
    return
  fi
  if detail="$("${VENV}/bin/python" -c 'import sys, redis; redis.Redis.from_url(sys.argv[1], socket_timeout=3).ping()' \
      "${url}" 2>&1)"; then
    ok store "redis answers ping"
  else
    fail store "redis unreachable: ${detail##*$'\n'}"
  fi
}

check_config() {
  local bind="${BIND_ADDRESS:-127.0.0.1}" provider="${LLM_PROVIDER:-auto}" key_var public
  public="$(public_settings_without_keys)"
  if [[ -n "${public}" ]]; then
    fail config "${public// /, } set without API_KEYS or API_KEYS_FILE: they serve remote clients, and without keys the service serves local ones only"
    return
  fi
  if [[ -n "${API_KEYS_FILE:-}" && ! -r "${API_KEYS_FILE}" ]]; then
    fail config "API_KEYS_FILE ${API_KEYS_FILE} is not readable"
    return
  fi
  case "${provider}" in
    auto|extractive|ollama) key_var="" ;;
    *) key_var="$(printf '%s_API_KEY' "${provider}" | tr '[:lower:]' '[:upper:]')" ;;
  esac
  if [[ -n "${key_var}" && -z "${!key_var:-}" ]]; then
    fail config "LLM_PROVIDER=${provider} but ${key_var} is not set"
    return
  fi
  if [[ ! -d "${DOCS_DIR:-${ROOT}/docs}" ]]; then
    fail config "DOCS_DIR ${DOCS_DIR:-${ROOT}/docs} does not exist"
    return
  fi
  # The defaults are mcp/settings.py's (THREADS 160, STREAM_RESERVE_THREADS 16, MAX_STREAMS 200).
  # A worker serves min(MAX_STREAMS, THREADS - STREAM_RESERVE_THREADS) streams (DESIGN §13).
  local threads="${THREADS:-160}" reserve="${STREAM_RESERVE_THREADS:-16}" streams="${MAX_STREAMS:-200}" held
  held=$((threads - reserve < streams ? threads - reserve : streams))
  if ((held < 1)); then
    fail config "THREADS=${threads} leaves no thread for SSE streams beside STREAM_RESERVE_THREADS=${reserve}"
    return
  fi
  ok config "bind ${bind}, provider ${provider}, ${held} streams per worker"
}

check_settings() {
  local problems
  # design: the same Settings (and .env reader) the app uses, so what passes here parses there.
  if problems="$(python3 -m mcp.settings --check "${ROOT}/.env" 2>&1)"; then
    ok settings "every variable parses and is in range"
  else
    fail settings "${problems//$'\n'/; }"
  fi
}

check_oauth() {
  local detail builtin=0
  [[ "${OAUTH_BUILTIN:-}" =~ ^(1|true|yes|on)$ ]] && builtin=1
  if ((builtin)); then
    if [[ -z "${API_KEYS:-}" && -z "${API_KEYS_FILE:-}" ]]; then
      fail oauth "OAUTH_BUILTIN=1 without API_KEYS or API_KEYS_FILE: nobody could approve a client on the consent page"
    else
      ok oauth "built-in authorization server"
    fi
    return
  fi
  if [[ -z "${OAUTH_ISSUER:-}" ]]; then
    ok oauth "not configured (API keys only)"
    return
  fi
  if [[ ! -x "${VENV}/bin/python" ]]; then
    fail oauth "cannot check ${OAUTH_ISSUER} without the venv"
    return
  fi
  # design: the service's own code reads the issuer, so what passes here is what it will see.
  if detail="$("${VENV}/bin/python" -c 'import sys; from mcp.oauth.tokens import IssuerKeys
print(len(IssuerKeys(sys.argv[1]).key_set().keys))' "${OAUTH_ISSUER}" 2>&1)"; then
    ok oauth "${OAUTH_ISSUER}: metadata and JWKS read (${detail} keys)"
  else
    fail oauth "${OAUTH_ISSUER}: ${detail##*$'\n'}"
  fi
}

check_caddy() {
  local out
  if ! command -v caddy >/dev/null; then
    ok caddy "not installed (skipped)"
    return
  fi
  if out="$(SITE_ADDRESS="${SITE_ADDRESS:-:8080}" caddy validate --config "${ROOT}/deploy/Caddyfile" \
      --adapter caddyfile 2>&1)"; then
    ok caddy "deploy/Caddyfile is valid"
  else
    fail caddy "deploy/Caddyfile: ${out##*$'\n'}"
  fi
}

main() {
  if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
    usage
    exit 0
  fi
  cd "${ROOT}"
  load_dotenv "${ROOT}" 2>/dev/null || true  # a refused .env is reported by check_settings
  check_settings
  PORT="${PORT:-5060}"
  DATA_DIR="${DATA_DIR:-${ROOT}/data}"
  VENV="${VENV_DIR:-venv}"
  [[ "${VENV}" == /* ]] || VENV="${ROOT}/${VENV}"
  check_python
  check_venv
  check_report_libraries
  check_port
  check_data_dir
  check_store
  check_config
  check_oauth
  check_caddy
  if ((${#FAILED[@]})); then
    log "failed: ${FAILED[*]}"
    exit 1
  fi
  log "all checks passed"
}

main "$@"
