# shellcheck shell=bash
# Sourced by start.sh, preflight.sh and deploy.sh.

DOTENV_READER="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/mcp/envfile.py"

# Export the variables of the .env file FILE (default ROOT/.env) that the environment does not
# already set (the environment wins, as with systemd's Environment=). The file is read by
# mcp/envfile.py, the same reader service_manager.py and the app's Settings use; a line it does
# not understand is refused (non-zero return, the reason on stderr) rather than half-read.
load_dotenv() {
  local file="${1:-${ROOT}/.env}" exports
  [[ -d "${file}" ]] && file="${file}/.env"
  [[ -f "${file}" ]] || return 0
  exports="$(python3 "${DOTENV_READER}" "${file}")" || return 1
  eval "${exports}"
}

# The booleans of mcp/settings.py: 1/true/yes/on are true, anything else false.
truthy() {
  case "${1,,}" in
    1|true|yes|on) return 0 ;;
    *) return 1 ;;
  esac
}
