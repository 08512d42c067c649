# shellcheck shell=bash
# Sourced by start.sh and preflight.sh (and so deploy.sh, which runs preflight.sh).
#
# Settings that only make sense for a service reached by remote clients. Without API keys
# the service serves local clients only, so any of them without keys is a mistake: the
# operator is putting the service behind a proxy or on the network and forgot the keys.

# Prints the names of such variables that are set while no keys are; prints nothing when
# keys are configured, or an external OAuth issuer is (OAUTH_ISSUER without OAUTH_BUILTIN:
# the service then takes that issuer's access tokens), or none is set. The built-in OAuth
# server needs keys: the operator approves each client with one.
public_settings_without_keys() {
  local found=() origin host hosts="${ALLOWED_HOSTS:-}" base="${PUBLIC_BASE_PATH:-}"
  [[ -n "${API_KEYS:-}" || -n "${API_KEYS_FILE:-}" ]] && return 0
  [[ -n "${OAUTH_ISSUER:-}" && ! "${OAUTH_BUILTIN:-}" =~ ^(1|true|yes|on)$ ]] && return 0
  case "${BIND_ADDRESS:-127.0.0.1}" in
    127.*|localhost|::1) ;;
    *) found+=(BIND_ADDRESS) ;;
  esac
  [[ "${TRUSTED_PROXIES:-0}" =~ ^[[:space:]]*0*[[:space:]]*$ ]] || found+=(TRUSTED_PROXIES)
  [[ -z "${hosts//[,[:space:]]/}" ]] || found+=(ALLOWED_HOSTS)
  [[ -z "${base//[\/[:space:]]/}" ]] || found+=(PUBLIC_BASE_PATH)
  local IFS=','
  for origin in ${CORS_ORIGINS:-}; do
    origin="${origin//[[:space:]]/}"
    [[ -n "${origin}" ]] || continue
    host="${origin#*://}"
    host="${host%%/*}"
    if [[ "${host}" == \[* ]]; then
      host="${host#[}"
      host="${host%%]*}"
    else
      host="${host%%:*}"
    fi
    case "${host}" in
      localhost|127.*|::1) ;;
      *) found+=(CORS_ORIGINS); break ;;
    esac
  done
  IFS=' '
  printf '%s\n' "${found[*]}"
}
