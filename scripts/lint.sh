#!/usr/bin/env bash
# Lint, format check and type check of the five packages (configuration: pyproject.toml [tool.ruff], [tool.mypy]).
#   bash scripts/lint.sh            # all three checks, a summary, exit 1 if any fails
# Run after scripts/setup.sh (which installs ruff and mypy from requirements.lock). Never rewrites a file.
set -uo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(weakseg serving batch training cli)
BIN=.venv/bin
for tool in ruff mypy; do
  if [ ! -x "$BIN/$tool" ]; then
    echo "lint: $BIN/$tool missing; run bash scripts/setup.sh first" >&2
    exit 2
  fi
done

log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
declare -A rc summary
verdict() {  # exit status, text for status 1 -> one summary line (2 and above: the tool itself failed)
  case "$1" in 0) echo "ok" ;; 1) echo "$2" ;; *) echo "did not run to the end (exit $1; output above)" ;; esac
}

echo "== ruff check ${PACKAGES[*]}"
"$BIN/ruff" check --no-cache --output-format concise "${PACKAGES[@]}" >"$log/check" 2>&1
rc[check]=$?
cat "$log/check"
n=$(grep -cE '^[^ ]+:[0-9]+:[0-9]+: ' "$log/check")
summary[check]=$(verdict "${rc[check]}" "$n finding(s)")

echo "== ruff format --check ${PACKAGES[*]}"
"$BIN/ruff" format --no-cache --check --output-format concise "${PACKAGES[@]}" >"$log/format" 2>&1
rc[format]=$?
cat "$log/format"
n=$(grep -c ': unformatted: ' "$log/format")
summary[format]=$(verdict "${rc[format]}" "$n file(s) would be reformatted (fix: ruff format ${PACKAGES[*]})")

echo "== mypy (files from pyproject.toml)"
"$BIN/mypy" >"$log/mypy" 2>&1
rc[mypy]=$?
cat "$log/mypy"
summary[mypy]=$(verdict "${rc[mypy]}" "$(tail -n 1 "$log/mypy")")

echo
echo "lint summary:"
failed=0
for check in check format mypy; do
  label=$([ "$check" = mypy ] && echo "mypy" || echo "ruff $check")
  printf '  %-12s %s\n' "$label" "${summary[$check]}"
  [ "${rc[$check]}" -eq 0 ] || failed=1
done
if [ "$failed" -ne 0 ]; then
  echo "lint: FAILED"
  exit 1
fi
echo "lint: passed"
