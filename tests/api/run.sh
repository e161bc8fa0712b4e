#!/usr/bin/env bash
# Checks the admin API against its own OpenAPI document: starts `altinn-sync dev` with a
# database, queues and exchange of its own on free ports, makes the demo firm known, and runs
# schemathesis (pinned in tests/api/requirements.txt, installed into the venv target/api-tools)
# over every /v1 operation with every check, a fixed seed and a bounded number of examples.
# Exits non-zero on any failure. Needs the local PostgreSQL and RabbitMQ.
#
#   bash tests/api/run.sh            # builds the debug binary if needed
#   ALTINN_SYNC_BIN=path bash tests/api/run.sh
#
# Every check runs (--checks all); none is left out.
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=target/api-tools
REQUIREMENTS=tests/api/requirements.txt
CONSTRAINTS=tests/api/constraints.txt
STAMP=$VENV/.installed
OUT=target/api-run
# Fixed, so a failure reproduces: the same seed and the same examples on every run (the two
# variables are for exploring, e.g. API_CHECK_SEED=7 API_CHECK_MAX_EXAMPLES=300).
SEED=${API_CHECK_SEED:-20261207}
MAX_EXAMPLES=${API_CHECK_MAX_EXAMPLES:-40}
# Names of the check's own, apart from `dev`'s, `run`'s and the tests': made afresh by each run
# (one at a time, under the lock below) and removed at its end.
DATABASE=altinn_sync_api_check
DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DATABASE
TOPOLOGY_PREFIX=altinn-sync-api-check
EVENTS_EXCHANGE=$TOPOLOGY_PREFIX.adminflow-events
DEMO=schemas/examples/demo
DEMO_FIRM=912345610

# The venv, from the pins; reinstalled only when the pins change.
wanted=$(cat "$REQUIREMENTS" "$CONSTRAINTS" | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/schemathesis" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$wanted" ]; then
    echo "api check: installing $(grep -v '^#' "$REQUIREMENTS" | xargs) into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --requirement "$REQUIREMENTS" --constraint "$CONSTRAINTS"
    echo "$wanted" >"$STAMP"
fi
"$VENV/bin/schemathesis" --version

BIN=${ALTINN_SYNC_BIN:-}
if [ -z "$BIN" ]; then
    cargo build --locked --quiet --bin altinn-sync
    BIN=target/debug/altinn-sync
fi

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9
DEV_OUT=$OUT/dev.out
DEV_LOG=$OUT/dev.log
dev_pid=""
# The database, queues and exchanges of this check. The exchanges go through rabbitmqctl eval,
# as rabbitmqctl has no delete_exchange; best effort, like the rest.
remove_resources() {
    psql -q -h 127.0.0.1 -U postgres -d postgres \
        -c "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" >/dev/null 2>&1 || true
    for queue in $(rabbitmqctl -q list_queues name 2>/dev/null | grep "^$TOPOLOGY_PREFIX\." || true); do
        rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true
    done
    for exchange in $(rabbitmqctl -q list_exchanges name 2>/dev/null | grep "^$TOPOLOGY_PREFIX\." || true); do
        rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, \
            <<\"$exchange\">>), false, <<\"api-check\">>)." >/dev/null 2>&1 || true
    done
}
cleanup() {
    if [ -n "$dev_pid" ] && kill -0 "$dev_pid" 2>/dev/null; then
        kill -TERM "$dev_pid"
        wait "$dev_pid" || true
    fi
    remove_resources
}
remove_resources
trap cleanup EXIT

# Port 0 for both listeners: the guide dev prints names the admin address it bound.
env -u ADMIN_TOKENS_FILE DATABASE_URL="$DATABASE_URL" TOPOLOGY_PREFIX="$TOPOLOGY_PREFIX" \
    EVENTS_EXCHANGE="$EVENTS_EXCHANGE" ADMIN_LISTEN=127.0.0.1:0 ALTINN_SIM_LISTEN=127.0.0.1:0 \
    RUST_LOG=warn \
    "$BIN" dev >"$DEV_OUT" 2>"$DEV_LOG" &
dev_pid=$!

admin=""
for _ in $(seq 1 120); do
    admin=$(sed -n 's/.*The admin API (health, metrics and \/v1) is at http:\/\/\([0-9.:]*\)\..*/\1/p' "$DEV_LOG")
    if [ -n "$admin" ] && grep -q '^ADMIN_TOKEN=' "$DEV_OUT"; then break; fi
    if ! kill -0 "$dev_pid" 2>/dev/null; then
        echo "api check: dev stopped before it was ready:" >&2
        cat "$DEV_LOG" >&2
        exit 1
    fi
    sleep 0.5
done
if [ -z "$admin" ]; then
    echo "api check: dev did not say where its admin API listens" >&2
    exit 1
fi
token=$(sed -n 's/^ADMIN_TOKEN=//p' "$DEV_OUT")
base=http://$admin

# The demo firm, known to the worker, so that cases with it reach the 200 answers.
"$BIN" publish --exchange "$EVENTS_EXCHANGE" --routing-key RoleChanged \
    "$DEMO/01-kari-role-changed.json" 2>>"$DEV_LOG"
"$BIN" publish --exchange "$EVENTS_EXCHANGE" --routing-key ClientAssigned \
    "$DEMO/02-kari-client-assigned.json" 2>>"$DEV_LOG"
for _ in $(seq 1 120); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" \
        "$base/v1/firms/$DEMO_FIRM/status" || true)
    if [ "$code" = 200 ]; then break; fi
    sleep 0.5
done
if [ "$code" != 200 ]; then
    echo "api check: the demo firm did not become known (last answer $code)" >&2
    exit 1
fi

echo "api check: schemathesis against dev at $base (seed $SEED, at most $MAX_EXAMPLES examples an operation)"
# The generation database is off, so earlier runs cannot change what this one sends; run in
# $OUT, where schemathesis keeps its crash cache for `st replay`.
root=$(pwd)
cd "$OUT"
SCHEMATHESIS_HOOKS="$root/tests/api/hooks.py" "$root/$VENV/bin/schemathesis" run "$base/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks all \
    --seed "$SEED" \
    --max-examples "$MAX_EXAMPLES" \
    --generation-database none \
    --workers 1 \
    --continue-on-failure \
    --report junit --report-dir . \
    --no-color
