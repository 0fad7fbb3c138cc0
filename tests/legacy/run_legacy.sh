#!/usr/bin/env bash
# Run the three legacy-SDK drivers against a Classic-API server and summarize.
#
#   tests/legacy/run_legacy.sh [--url http://127.0.0.1:PORT/api] [--token TOKEN] [--out-dir DIR]
#                              [--instance h/g/p] [--only "runtime-0.40.1 runtime-0.23.0 provider-0.11.0"]
#                              (--only runtime-0.20.0 runs the V1 primitives driver, drive_runtime_v1.py)
#
# Without --url it starts `qiskit-classic-proxy demo` (proxy + built-in emulator) on a free
# loopback port, runs the drivers through it and stops it afterwards (by its PID). The venvs
# come from setup_venvs.sh (run first; it is idempotent). Order: runtime 0.40.1, runtime 0.23.0,
# then the provider, which is given a SamplerV2 job id from the 0.40.1 run for retrieve_job.
# Exit code: 0 only if every driver passed all its required steps.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
URL=""
TOKEN="legacy-driver-token"
OUT_DIR=""
INSTANCE=""
ONLY="runtime-0.40.1 runtime-0.23.0 provider-0.11.0"
PROXY_CMD="${QCP_PROXY_CMD:-}"
if [[ -z "$PROXY_CMD" ]]; then
    if [[ -x "$ROOT/../venv/bin/qiskit-classic-proxy" ]]; then
        PROXY_CMD="$ROOT/../venv/bin/qiskit-classic-proxy"
    else
        PROXY_CMD="qiskit-classic-proxy"
    fi
fi

while [[ $# -gt 0 ]]; do
    case "$1" in
        --url) URL="$2"; shift 2 ;;
        --token) TOKEN="$2"; shift 2 ;;
        --out-dir) OUT_DIR="$2"; shift 2 ;;
        --instance) INSTANCE="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        -h|--help) sed -n 2,12p "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

OUT_DIR="${OUT_DIR:-$(mktemp -d /tmp/qcp-legacy.XXXXXX)}"
mkdir -p "$OUT_DIR"
"$HERE/setup_venvs.sh" || { echo "setup_venvs.sh failed" >&2; exit 1; }
VENV_DIR="$("$HERE/setup_venvs.sh" --print-dir)"

DEMO_PID=""
cleanup() {
    if [[ -n "$DEMO_PID" ]] && kill -0 "$DEMO_PID" 2>/dev/null; then
        kill "$DEMO_PID" 2>/dev/null
        wait "$DEMO_PID" 2>/dev/null
    fi
}
trap cleanup EXIT

if [[ -z "$URL" ]]; then
    PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "$PROXY_CMD" demo --port "$PORT" --seconds 1800 >"$OUT_DIR/demo.log" 2>&1 &
    DEMO_PID=$!
    URL="http://127.0.0.1:$PORT/api"
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "$URL/version" 2>/dev/null && break
        kill -0 "$DEMO_PID" 2>/dev/null || { echo "demo exited; see $OUT_DIR/demo.log" >&2; cat "$OUT_DIR/demo.log" >&2; exit 1; }
        sleep 0.2
    done
    curl -fsS -o /dev/null "$URL/version" || { echo "demo not answering on $URL" >&2; exit 1; }
    echo "demo proxy: $URL (log: $OUT_DIR/demo.log)"
fi

inst=()
[[ -n "$INSTANCE" ]] && inst=(--instance "$INSTANCE")
rc=0
runtime_job=""
for name in $ONLY; do
    py="$VENV_DIR/$name/bin/python"
    out="$OUT_DIR/$name.json"
    case "$name" in
        runtime-0.20.0) script="$HERE/drive_runtime_v1.py"; extra=() ;;  # V1 Sampler/Estimator (#12)
        runtime-*) script="$HERE/drive_runtime.py"; extra=() ;;
        provider-*)
            script="$HERE/drive_provider.py"; extra=()
            [[ -n "$runtime_job" ]] && extra=(--runtime-job-id "$runtime_job") ;;
        *) echo "unknown driver venv $name" >&2; rc=1; continue ;;
    esac
    echo "---- $name"
    "$py" "$script" --url "$URL" --token "$TOKEN" "${inst[@]}" "${extra[@]}" --out "$out" \
        >"$OUT_DIR/$name.out" 2>&1
    drc=$?
    grep -E '^\[(FAIL|SKIP)\]|summary' "$OUT_DIR/$name.out"
    [[ $drc -eq 0 ]] || rc=1
    if [[ "$name" == runtime-0.40.1 && -f "$out" ]]; then
        runtime_job="$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("job_ids", {}).get("job", ""))' "$out")"
    fi
done
echo "results in $OUT_DIR (rc=$rc)"
exit "$rc"
