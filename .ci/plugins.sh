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
work="$(mktemp -d)"
cleanup() {
    rm -rf "$work"
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
    # end to end, exactly as a user would run it: the entry-point name is also the defense key
    key="$("$PY" -c 'import sys, tomllib; print(next(iter(tomllib.load(open(sys.argv[1], "rb"))["project"]["entry-points"]["stealbench"])))' "$dir/pyproject.toml")"
    echo "== $dist: stealbench fit --defense $key --attack jbda (smoke run)"
    if ! (cd "$work" && STEALBENCH_CACHE_DIR="$work/cache" stealbench fit --defense "$key" --attack jbda \
            --victim.epochs 2 --attack.rounds 2 --attack.epochs_per_round 1 --budget 200 \
            --wandb.mode disabled --progress_bar false --output_dir "$work/runs" > "$work/$key.log" 2>&1); then
        tail -20 "$work/$key.log" >&2
        failed+=("$dist (fit)")
    fi
    rm -rf "$dir/build" "$dir"/src/*.egg-info
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "plugin tests failed: ${failed[*]}" >&2
    exit 1
fi
echo "all plugin distributions installed and passed their tests: ${installed[*]}"
