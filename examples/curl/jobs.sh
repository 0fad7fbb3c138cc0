#!/usr/bin/env bash
# Legacy dashboard script: log in the Classic way, then list the last jobs and read one session.
# Runs against the proxy: `qiskit-classic-proxy demo`, then `bash jobs.sh`.
set -euo pipefail
BASE="${QCP_URL:-http://127.0.0.1:8080}"
TOKEN="$(curl -sf -X POST "$BASE/api/users/loginWithToken" -H 'Content-Type: application/json' \
  -d "{\"apiToken\": \"${QISKIT_IBM_TOKEN:-anything}\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
curl -sf "$BASE/runtime/jobs?limit=5" -H "X-Access-Token: $TOKEN"
echo
curl -sf "$BASE/runtime/backends" -H "X-Access-Token: $TOKEN"
echo
