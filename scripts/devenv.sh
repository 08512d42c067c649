# shellcheck shell=bash
# Sourced by test.sh and bench/run.sh: the virtual environment of the tests and benchmarks,
# with requirements-dev.txt (which includes requirements.txt), installed only when either
# file changed. Uses the caller's log and die.
ensure_dev_venv() {
  local venv="$1" root="$2" stamp want
  command -v python3 >/dev/null || die "python3 not found"
  [[ -x "${venv}/bin/python" ]] || python3 -m venv "${venv}" || die "could not create ${venv}"
  [[ "${SKIP_PIP_INSTALL:-0}" == "1" ]] && return 0
  stamp="${venv}/.requirements-dev.sha256"
  want="$(cat "${root}/requirements.txt" "${root}/requirements-dev.txt" | sha256sum | cut -d' ' -f1)"
  [[ -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]] && return 0
  log "installing Python dependencies into ${venv}"
  "${venv}/bin/pip" install --quiet --disable-pip-version-check -r "${root}/requirements-dev.txt" \
    || die "pip install failed"
  printf '%s\n' "${want}" > "${stamp}"
  # start.sh's own stamp: the same venv now holds requirements.txt too.
  sha256sum < "${root}/requirements.txt" | cut -d' ' -f1 > "${venv}/.requirements.sha256"
}
