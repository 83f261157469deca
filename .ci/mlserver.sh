#!/usr/bin/env bash
# MLServer in a venv of its own (.venv-mlserver), pinned by .ci/mlserver-requirements.txt, for the end-to-end test
# in tests/test_third_party_v2.py (found through $STEALBENCH_MLSERVER_PYTHON). Optional: on success the venv's
# python path is the only line on stdout; on failure one line on stderr says why the test will skip, exit status 1.
# pip's output goes to .venv-mlserver.log. Re-running reuses the venv (pip then installs nothing).
# Usage: STEALBENCH_MLSERVER_PYTHON="$(bash .ci/mlserver.sh)"
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="$PWD/.venv-mlserver"
REQ=.ci/mlserver-requirements.txt
LOG="$PWD/.venv-mlserver.log"

skip() {
    echo "MLServer unavailable ($1; see $LOG): the MLServer test in tests/test_third_party_v2.py will skip" >&2
    exit 1
}

want="$(grep -E '^torch==' "$REQ")"
have="$(grep -oE '"torch==[^"]+"' pyproject.toml | tr -d '"')"
[ "$want" = "$have" ] || echo "warning: $REQ pins $want, pyproject.toml $have" >&2

: > "$LOG"
python3 -m venv "$VENV" >> "$LOG" 2>&1 || skip "python3 -m venv $VENV failed"
"$VENV/bin/python" -m pip install --quiet -r "$REQ" >> "$LOG" 2>&1 \
    || skip "pip install -r $REQ failed: $(grep -E 'ERROR' "$LOG" | tail -1 | cut -c1-200)"
"$VENV/bin/python" -c "import mlserver, torch" >> "$LOG" 2>&1 \
    || skip "$VENV/bin/python cannot import mlserver and torch: $(tail -1 "$LOG" | cut -c1-200)"
echo "$VENV/bin/python"
