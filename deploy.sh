#!/usr/bin/env bash
# Deploy a git ref of this repository as a release, with a health check and automatic rollback.
#
# Usage: ./deploy.sh [REF]       deploy REF (default: the branch head)
#        ./deploy.sh --rollback  switch back to the previous release
#        ./deploy.sh --status    print the current and previous releases
# Layout under DEPLOY_ROOT (/opt/mcp-orchestrator): releases/<sha>/ (code + RELEASE file),
#   venvs/<requirements hash>/ (shared by releases with the same requirements.txt),
#   current -> releases/<sha>, previous (the sha before), data/ (DATA_DIR unless set).
# Environment: DEPLOY_ROOT, DEPLOY_HEALTH_TIMEOUT (60), DATA_DIR, PORT, SERVICE_MANAGER_HOME.
#   DEPLOY_ROOT/.env (the service's configuration; linked into every release) is read for what
#   the environment does not set. Restarts through systemd when mcp-orchestrator.service is
#   installed, else service_manager.py.
# Exit codes: 0 deployed and healthy; 1 failed (rolled back when a previous release exists);
#   2 usage; 3 another deploy holds the lock.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEPLOY_ROOT="${DEPLOY_ROOT:-/opt/mcp-orchestrator}"
HEALTH_TIMEOUT="${DEPLOY_HEALTH_TIMEOUT:-60}"
KEEP_RELEASES=5
UNIT="mcp-orchestrator.service"
VENV_COMPLETE=".complete"

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { log "$*"; exit 1; }
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

# shellcheck source=scripts/dotenv.sh
source "${REPO}/scripts/dotenv.sh"

take_lock() {
  mkdir -p "${DEPLOY_ROOT}/releases" "${DEPLOY_ROOT}/venvs"
  exec 9>"${DEPLOY_ROOT}/.deploy.lock"
  flock -n 9 || { log "another deploy is running"; exit 3; }
}

current_sha() {
  local target
  target="$(readlink "${DEPLOY_ROOT}/current" 2>/dev/null)" || return 0
  basename "${target}"
}

previous_sha() { cat "${DEPLOY_ROOT}/previous" 2>/dev/null || true; }

build_release() {
  local sha="$1" dir="${DEPLOY_ROOT}/releases/$1" hash venv
  if [[ ! -f "${dir}/RELEASE" ]]; then
    log "building release ${sha}"
    rm -rf "${dir}.tmp"
    mkdir -p "${dir}.tmp"
    git -C "${REPO}" archive "${sha}" | tar -x -C "${dir}.tmp"
    printf '%s\n' "${sha}" > "${dir}.tmp/RELEASE"
    rm -rf "${dir}"
    mv "${dir}.tmp" "${dir}"
  fi
  # design: releases with the same requirements.txt share one venv, so a routine deploy
  # installs nothing; a new requirements.txt gets a fresh venv beside the old one.
  hash="$(sha256sum < "${dir}/requirements.txt" | cut -c1-16)"
  venv="${DEPLOY_ROOT}/venvs/${hash}"
  ensure_venv "${venv}" "${dir}/requirements.txt" || die "could not install the requirements of ${sha}"
  ln -sfn "${venv}" "${dir}/venv"
  # design: a release is `git archive` output, without the operator's .env; every release
  # reads the one configuration kept at DEPLOY_ROOT/.env.
  ln -sfn "${DEPLOY_ROOT}/.env" "${dir}/.env"
}

unit_data_dir() {
  # the DATA_DIR the installed systemd unit gives the service (one data directory everywhere)
  if command -v systemctl >/dev/null && systemctl cat "${UNIT}" >/dev/null 2>&1; then
    systemctl show -p Environment --value "${UNIT}" | tr ' ' '\n' | sed -n 's/^DATA_DIR=//p'
  fi
}

# design: a venv is not relocatable (its scripts' shebangs name the path it was made at), so
# it is built where it will be used, and VENV_COMPLETE, written last, says it is whole; one
# without it (a deploy killed mid-install) is removed and built again.
ensure_venv() {
  local venv="$1" requirements="$2"
  [[ -f "${venv}/${VENV_COMPLETE}" ]] && return 0
  if [[ -e "${venv}" || -L "${venv}" ]]; then
    log "removing the incomplete venv ${venv}"
    rm -rf "${venv}"
  fi
  log "creating venv ${venv}"
  if ! python3 -m venv "${venv}" \
      || ! "${venv}/bin/pip" install --quiet --disable-pip-version-check -r "${requirements}"; then
    rm -rf "${venv}"
    return 1
  fi
  sha256sum < "${requirements}" | cut -d' ' -f1 > "${venv}/${VENV_COMPLETE}"
}

service_env() {
  load_dotenv "${DEPLOY_ROOT}/.env" || die "refusing ${DEPLOY_ROOT}/.env (see above)"
  DATA_DIR="${DATA_DIR:-$(unit_data_dir)}"
  export DATA_DIR="${DATA_DIR:-${DEPLOY_ROOT}/data}" SKIP_PIP_INSTALL=1 VENV_DIR="${DEPLOY_ROOT}/current/venv"
  mkdir -p "${DATA_DIR}"
}

switch_to() {
  ln -sfn "releases/$1" "${DEPLOY_ROOT}/current.tmp"
  mv -Tf "${DEPLOY_ROOT}/current.tmp" "${DEPLOY_ROOT}/current"
}

restart() {
  if command -v systemctl >/dev/null && systemctl cat "${UNIT}" >/dev/null 2>&1; then
    systemctl restart "${UNIT}"
  else
    # stop, then start with this deploy's environment (`restart` would reuse the one recorded
    # at the last start)
    python3 "${DEPLOY_ROOT}/current/service_manager.py" stop mcp-orchestrator >&2 || true
    python3 "${DEPLOY_ROOT}/current/service_manager.py" start mcp-orchestrator >&2 || true
  fi
}

healthy_release() {
  local sha="$1" deadline=$((SECONDS + HEALTH_TIMEOUT)) info
  while ((SECONDS < deadline)); do
    if curl -fsS --max-time 3 "http://127.0.0.1:${PORT:-5060}/health" >/dev/null 2>&1; then
      info="$(curl -fsS --max-time 3 "http://127.0.0.1:${PORT:-5060}/" || true)"
      [[ "${info}" == *"\"release\":\"${sha}\""* ]] && return 0
    fi
    sleep 1
  done
  return 1
}

prune() {
  local keep=("$(current_sha)" "$(previous_sha)") dir name
  # shellcheck disable=SC2012 # release names are hex shas
  for dir in $(ls -1dt "${DEPLOY_ROOT}"/releases/*/ 2>/dev/null | tail -n +$((KEEP_RELEASES + 1))); do
    name="$(basename "${dir}")"
    [[ " ${keep[*]} " == *" ${name} "* ]] || rm -rf "${dir}"
  done
}

deploy() {
  local ref="${1:-HEAD}" sha before before_previous
  sha="$(git -C "${REPO}" rev-parse --verify "${ref}^{commit}")" || die "unknown ref ${ref}"
  take_lock
  service_env
  build_release "${sha}"
  before="$(current_sha)"
  before_previous="$(previous_sha)"
  if ! (cd "${DEPLOY_ROOT}/releases/${sha}" && VENV_DIR="${DEPLOY_ROOT}/releases/${sha}/venv" ./preflight.sh >&2); then
    die "preflight of ${sha} failed; nothing changed"
  fi
  switch_to "${sha}"
  [[ -n "${before}" && "${before}" != "${sha}" ]] && printf '%s\n' "${before}" > "${DEPLOY_ROOT}/previous"
  restart
  if healthy_release "${sha}"; then
    log "release ${sha} is serving"
    prune
    return 0
  fi
  if [[ -z "${before}" || "${before}" == "${sha}" ]]; then
    die "release ${sha} is not healthy and there is no previous release to return to"
  fi
  log "release ${sha} failed its health check; switching back to ${before}"
  switch_to "${before}"
  printf '%s\n' "${before_previous}" > "${DEPLOY_ROOT}/previous"
  restart
  healthy_release "${before}" || log "the previous release ${before} is not healthy either"
  exit 1
}

rollback() {
  local target
  take_lock
  service_env
  target="$(previous_sha)"
  [[ -n "${target}" && -d "${DEPLOY_ROOT}/releases/${target}" ]] || die "no previous release to roll back to"
  printf '%s\n' "$(current_sha)" > "${DEPLOY_ROOT}/previous"
  switch_to "${target}"
  restart
  healthy_release "${target}" || die "release ${target} is not healthy after the rollback"
  log "rolled back to ${target}"
}

main() {
  case "${1:-}" in
    -h|--help) usage ;;
    --status) printf 'current  %s\nprevious %s\n' "$(current_sha)" "$(previous_sha)" ;;
    --rollback) rollback ;;
    -*) usage >&2; exit 2 ;;
    *) deploy "${1:-HEAD}" ;;
  esac
}

main "$@"
