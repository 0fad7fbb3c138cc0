#!/usr/bin/env bash
# Create the three legacy-SDK virtualenvs used by tests/legacy/drive_*.py.
#
# Recipes: /work/shared/reference/legacy-clients.md section 1 (fresh venv each, pinned versions).
#   runtime-0.40.1  : qiskit-ibm-runtime 0.40.1 on qiskit 2.6.2 / numpy 2.x
#   runtime-0.23.0  : qiskit-ibm-runtime 0.23.0 needs qiskit 1.0.x, numpy<2, websocket-client<1.9
#   provider-0.11.0 : qiskit-ibm-provider 0.11.0 needs qiskit<1 (0.46.3 / qiskit-terra 0.46.3), numpy<2
#   runtime-0.20.0  : qiskit-ibm-runtime 0.20.0 (V1 Sampler/Estimator) on qiskit 0.46.3, numpy<2,
#                     websocket-client<1.9 (issue #12; not in the default set, build it with QCP_LEGACY_ONLY)
#
# Idempotent: a venv that has a marker file matching the current recipe AND passes an import
# check is skipped. Otherwise it is deleted and rebuilt from scratch (never downgraded in place:
# downgrading qiskit 2.x -> 0.46 in place breaks qiskit-terra, see the reference doc).
#
# If tests/legacy/locks/<name>.txt exists it is used as a pip constraints file, so transitive
# dependencies are pinned too (the lock files are `pip freeze` output of a known-good install).
# A fresh install without a lock writes <venv>/pip-freeze.txt; copy it into locks/ to pin.
#
# Env:
#   QCP_LEGACY_VENV_DIR  cache dir (default $HOME/.cache/qiskit-classic-proxy/legacy-venvs)
#   QCP_LEGACY_PYTHON    interpreter used to create the venvs (default python3)
#   QCP_LEGACY_ONLY      space-separated subset of venv names to build (default: the three above;
#                        runtime-0.30.0 and ibmq-provider-0.20.2 are built only when named here)
#   QCP_LEGACY_FORCE=1   rebuild even if the venv passes its checks
# Usage: tests/legacy/setup_venvs.sh [--print-dir]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV_DIR="${QCP_LEGACY_VENV_DIR:-$HOME/.cache/qiskit-classic-proxy/legacy-venvs}"
PY="${QCP_LEGACY_PYTHON:-python3}"
LOCK_DIR="$HERE/locks"
MARKER=".qcp-legacy-installed"

if [[ "${1:-}" == "--print-dir" ]]; then
    echo "$VENV_DIR"
    exit 0
fi

# name | pip requirement specs | python import check
declare -A SPECS CHECKS
SPECS[runtime-0.40.1]="qiskit-ibm-runtime==0.40.1 qiskit==2.6.2 numpy==2.4.6 requests==2.34.2 urllib3==2.8.0"
CHECKS[runtime-0.40.1]="import qiskit, qiskit_ibm_runtime; from qiskit_ibm_runtime import QiskitRuntimeService, SamplerV2, Session, Batch; assert qiskit_ibm_runtime.__version__ == '0.40.1', qiskit_ibm_runtime.__version__; assert qiskit.__version__ == '2.6.2', qiskit.__version__"
SPECS[runtime-0.23.0]="qiskit-ibm-runtime==0.23.0 qiskit==1.0.2 numpy==1.26.4 websocket-client==1.8.0 requests==2.34.2"
CHECKS[runtime-0.23.0]="import qiskit, qiskit_ibm_runtime, websocket; from qiskit_ibm_runtime import QiskitRuntimeService, SamplerV2, Session, Batch; assert qiskit_ibm_runtime.__version__ == '0.23.0', qiskit_ibm_runtime.__version__; assert qiskit.__version__.startswith('1.0.'), qiskit.__version__; assert websocket.__version__ == '1.8.0', websocket.__version__"
# Built only when asked for by name (QCP_LEGACY_ONLY): the url_resolver= path of issue #18.
SPECS[runtime-0.30.0]="qiskit-ibm-runtime==0.30.0 qiskit==1.2.4 numpy==1.26.4 requests==2.34.2"
CHECKS[runtime-0.30.0]="import qiskit, qiskit_ibm_runtime; from qiskit_ibm_runtime import QiskitRuntimeService, SamplerV2, Session, Batch; assert qiskit_ibm_runtime.__version__ == '0.30.0', qiskit_ibm_runtime.__version__; assert qiskit.__version__ == '1.2.4', qiskit.__version__"
# Built only when named: qiskit-ibmq-provider (IBMQ.enable_account), the oldest surface (#18).
SPECS[ibmq-provider-0.20.2]="qiskit-ibmq-provider==0.20.2 qiskit-terra==0.23.3 numpy==1.23.5 requests==2.34.2"
CHECKS[ibmq-provider-0.20.2]="import qiskit, qiskit.providers.ibmq as q; from qiskit import IBMQ; assert q.__version__ == '0.20.2', q.__version__"
SPECS[provider-0.11.0]="qiskit-ibm-provider==0.11.0 qiskit==0.46.3 qiskit-terra==0.46.3 numpy==1.26.4 requests==2.34.2"
CHECKS[provider-0.11.0]="import qiskit, qiskit_ibm_provider; from qiskit_ibm_provider import IBMProvider; from qiskit.providers import ProviderV1; assert qiskit_ibm_provider.__version__ == '0.11.0', qiskit_ibm_provider.__version__; assert qiskit.__version__ == '0.46.3', qiskit.__version__"

SPECS[runtime-0.20.0]="qiskit-ibm-runtime==0.20.0 qiskit==0.46.3 numpy==1.26.4 websocket-client==1.8.0 requests==2.34.2"
CHECKS[runtime-0.20.0]="import qiskit, qiskit_ibm_runtime; from qiskit_ibm_runtime import QiskitRuntimeService, Sampler, Estimator, Session; assert qiskit_ibm_runtime.__version__ == '0.20.0', qiskit_ibm_runtime.__version__; assert qiskit.__version__ == '0.46.3', qiskit.__version__"

# A current release, for checking that `scan --fix` output imports (tests/scan/test_fix.py).
SPECS[runtime-0.51.0]="qiskit-ibm-runtime==0.51.0"
CHECKS[runtime-0.51.0]="import qiskit, qiskit_ibm_runtime; from qiskit_ibm_runtime import QiskitRuntimeService, SamplerV2, Session; assert qiskit_ibm_runtime.__version__ == '0.51.0', qiskit_ibm_runtime.__version__"

ORDER=(runtime-0.40.1 runtime-0.23.0 provider-0.11.0 runtime-0.51.0)
if [[ -n "${QCP_LEGACY_ONLY:-}" ]]; then
    read -r -a ORDER <<<"$QCP_LEGACY_ONLY"
fi

mkdir -p "$VENV_DIR"

recipe_id() {  # what the marker must contain: the specs plus the lock file contents
    local name="$1"
    {
        echo "${SPECS[$name]}"
        if [[ -f "$LOCK_DIR/$name.txt" ]]; then cat "$LOCK_DIR/$name.txt"; fi
    } | sha256sum | cut -d' ' -f1
}

check_venv() {
    local name="$1" dir="$VENV_DIR/$1"
    [[ -x "$dir/bin/python" ]] || return 1
    [[ -f "$dir/$MARKER" ]] || return 1
    [[ "$(head -n1 "$dir/$MARKER")" == "$(recipe_id "$name")" ]] || return 1
    "$dir/bin/python" -W ignore -c "${CHECKS[$name]}" >/dev/null 2>&1 || return 1
}

build_venv() {
    local name="$1" dir="$VENV_DIR/$1" log="$VENV_DIR/$1.install.log"
    local -a constraint=()
    if [[ -f "$LOCK_DIR/$name.txt" ]]; then constraint=(-c "$LOCK_DIR/$name.txt"); fi
    rm -rf "$dir"
    "$PY" -m venv "$dir" >"$log" 2>&1 || return 1
    # shellcheck disable=SC2086
    "$dir/bin/pip" install --disable-pip-version-check -q ${SPECS[$name]} "${constraint[@]}" >>"$log" 2>&1 || return 1
    "$dir/bin/python" -W ignore -c "${CHECKS[$name]}" >>"$log" 2>&1 || return 1
    "$dir/bin/pip" freeze --disable-pip-version-check --all >"$dir/pip-freeze.txt" 2>>"$log" || return 1
    { recipe_id "$name"; echo "specs: ${SPECS[$name]}"; echo "installed: $(date -u +%FT%TZ)"; } >"$dir/$MARKER"
}

rc=0
for name in "${ORDER[@]}"; do
    if [[ -z "${SPECS[$name]:-}" ]]; then
        echo "$name: FAILED (unknown venv name)"; rc=1; continue
    fi
    dir="$VENV_DIR/$name"
    if [[ "${QCP_LEGACY_FORCE:-0}" != "1" ]] && check_venv "$name"; then
        echo "$name: ok (cached) $dir"
        continue
    fi
    start=$(date +%s)
    # One retry: a fresh machine's first download from the registry can fail transiently.
    if build_venv "$name" || { echo "$name: first attempt failed, retrying once" >&2; mkdir -p "$VENV_DIR"; build_venv "$name"; }; then
        size=$(du -sh "$dir" 2>/dev/null | cut -f1)
        echo "$name: ok (installed in $(( $(date +%s) - start ))s, $size) $dir"
    else
        echo "$name: FAILED after $(( $(date +%s) - start ))s; see $VENV_DIR/$name.install.log" >&2
        tail -n 20 "$VENV_DIR/$name.install.log" >&2 || true
        echo "$name: FAILED"
        rm -f "$dir/$MARKER"
        rc=1
    fi
done
exit "$rc"
