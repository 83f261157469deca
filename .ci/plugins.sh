#!/usr/bin/env bash
# CI for the plugin distributions under plugins/: install each one into the current environment (as a third party
# would: `pip install ./plugins/<dist>`), run its own tests from its own folder, and uninstall it again so that the
# core's test run sees only the built-ins. STEALBENCH_KEEP_PLUGINS=1 leaves them installed.
# Usage (from anywhere, with the environment that has stealbench installed active): bash .ci/plugins.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export WANDB_MODE=disabled WANDB_ERROR_REPORTING=false WANDB_SILENT=true

installed=()
cleanup() {
    if [ "${STEALBENCH_KEEP_PLUGINS:-0}" != "1" ] && [ ${#installed[@]} -gt 0 ]; then
        "$PY" -m pip uninstall --quiet --yes "${installed[@]}" || true
    fi
}
trap cleanup EXIT

failed=()
for dir in plugins/*/; do
    dir="${dir%/}"
    [ -f "$dir/pyproject.toml" ] || continue
    dist="$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["name"])' "$dir/pyproject.toml")"
    echo "== $dist ($dir): pip install ./$dir"
    # stealbench (already installed) satisfies the plugin's `stealbench>=0.1`: nothing else is downloaded
    "$PY" -m pip install --quiet "./$dir"
    installed+=("$dist")
    echo "== $dist: pytest"
    if ! (cd "$dir" && "$PY" -m pytest -q -p no:cacheprovider); then
        failed+=("$dist")
    fi
    rm -rf "$dir/build" "$dir"/src/*.egg-info
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "plugin tests failed: ${failed[*]}" >&2
    exit 1
fi
echo "all plugin distributions installed and passed their tests: ${installed[*]}"
