#!/usr/bin/env bash
# The README's curl walk-through: create a tenant key with the admin key, ingest with wait, search,
# read the job, erase the user. Needs a running server started with MEMSVC_ADMIN_KEY set, e.g.
#   MEMSVC_ADMIN_KEY=admin-secret make run
#   MEMSVC_ADMIN_KEY=admin-secret bash examples/quickstart.sh
set -euo pipefail

URL=${MEMSVC_URL:-http://127.0.0.1:8420}
ADMIN_KEY=${MEMSVC_ADMIN_KEY:?set MEMSVC_ADMIN_KEY to the admin key the server was started with}

# Read one field of a JSON answer (jq when present, else Python).
field() {
    if command -v jq >/dev/null; then jq -r ".$1"; else python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; fi
}

echo "1. health"
curl -fsS "$URL/healthz"; echo

echo "2. create a tenant key with the admin key"
TENANT_KEY=$(curl -fsS -X POST "$URL/v1/admin/keys" \
    -H "Authorization: Bearer $ADMIN_KEY" -H 'Content-Type: application/json' \
    -d '{"tenant": "acme", "name": "quickstart"}' | field key)
echo "tenant key: ${TENANT_KEY:0:8}..."

echo "3. ingest two messages and wait until they are searchable"
INGEST=$(curl -fsS -X POST "$URL/v1/users/caroline/sessions/session-1/messages" \
    -H "Authorization: Bearer $TENANT_KEY" -H 'Content-Type: application/json' \
    -d '{"wait": true, "messages": [
          {"id": "D1:3", "speaker": "Caroline", "role": "user",
           "content": "I went to a LGBTQ support group yesterday and it was so powerful.",
           "created_at": "2023-05-08T13:56:00+00:00"},
          {"id": "D1:4", "speaker": "Melanie", "role": "assistant",
           "content": "That is great to hear! What happened there?",
           "created_at": "2023-05-08T13:57:00+00:00"}]}')
echo "$INGEST"
JOB_ID=$(echo "$INGEST" | field job_id)
STATUS=$(echo "$INGEST" | field status)
[ "$STATUS" = done ] || { echo "ingest ended $STATUS, not done: see GET /v1/jobs/$JOB_ID" >&2; exit 1; }

echo "4. search"
curl -fsS -X POST "$URL/v1/users/caroline/search" \
    -H "Authorization: Bearer $TENANT_KEY" -H 'Content-Type: application/json' \
    -d '{"query": "When did Caroline go to the LGBTQ support group?", "max_tokens": 200}'
echo

echo "5. job status"
curl -fsS "$URL/v1/jobs/$JOB_ID" -H "Authorization: Bearer $TENANT_KEY"; echo

echo "6. erase the user, then search again (404: nothing of the user is left)"
curl -fsS -o /dev/null -w '%{http_code}\n' -X DELETE "$URL/v1/users/caroline" \
    -H "Authorization: Bearer $TENANT_KEY"
AFTER=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$URL/v1/users/caroline/search" \
    -H "Authorization: Bearer $TENANT_KEY" -H 'Content-Type: application/json' -d '{"query": "support group"}')
echo "$AFTER"
[ "$AFTER" = 404 ] || { echo "expected 404 after erasure, got $AFTER" >&2; exit 1; }
