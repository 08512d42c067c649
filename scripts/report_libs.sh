# shellcheck shell=bash
# Sourced by start.sh and preflight.sh: the Debian packages WeasyPrint (PDF reports) loads
# at run time, each with a file it provides. pip cannot install them; without them every
# other part of the service works and PDF reports answer 503.
REPORT_PACKAGES=(
  "libpango-1.0-0:libpango-1.0.so.0"
  "libpangoft2-1.0-0:libpangoft2-1.0.so.0"
  "libharfbuzz-subset0:libharfbuzz-subset.so.0"
  "fonts-dejavu-core:DejaVuSans.ttf"
)

# Prints the packages of REPORT_PACKAGES whose file is missing, one a line.
missing_report_packages() {
  local entry package file libraries
  libraries="$({ ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null || true)"
  for entry in "${REPORT_PACKAGES[@]}"; do
    package="${entry%%:*}"
    file="${entry#*:}"
    if [[ "${file}" == *.ttf ]]; then
      [[ -n "$(find /usr/share/fonts /usr/local/share/fonts -name "${file}" -print -quit 2>/dev/null)" ]] \
        || printf '%s\n' "${package}"
    elif ! grep -qF "${file}" <<<"${libraries}"; then
      printf '%s\n' "${package}"
    fi
  done
}
