# shellcheck shell=bash
# Sourced by start.sh and preflight.sh: export the variables of ROOT/.env that the
# environment does not already set (the environment wins, as with systemd's Environment=).
load_dotenv() {
  local file="$1/.env" line key
  [[ -f "${file}" ]] || return 0
  while IFS= read -r line || [[ -n "${line}" ]]; do
    [[ "${line}" =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
    key="${BASH_REMATCH[1]}"
    [[ -n "${!key+x}" ]] && continue
    export "${key}=${BASH_REMATCH[2]}"
  done < "${file}"
}
