#!/usr/bin/env bash
# `make test`: bring the stack up (installing what is missing), then lint and run
# every suite against real PostgreSQL, RabbitMQ and worker processes.
#   scripts/test.sh                 everything
#   scripts/test.sh order           one service's tests (tests/order, with its settings)
#   scripts/test.sh unit|e2e|quorum|chaos|cluster  one layer
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=.venv/bin/python
ARTIFACTS="$ROOT/test-artifacts"
TEST_BROKER_URL="amqp://saga:saga@127.0.0.1:${SAGA_AMQP_PORT:-5672}/saga_test"
SERVICES=$(cd "$ROOT" && python3 -m common.services)  # the one list: common/services.py
ONLY="${1:-all}"
# The tests reconfigure the stack (below); afterwards it is put back as it was: running
# with the user's own settings, or stopped. SAGA_TEST_KEEP_STACK=1 leaves it as tested.
STACK_WAS_RUNNING=0
scripts/stack.sh running && STACK_WAS_RUNNING=1
USER_UNSET=() USER_SET=()
for var in SAGA_RETRY_DELAYS SAGA_ORDER_DEADLINE_SECONDS SAGA_INVENTORY_WORKERS SAGA_PAYMENT_WORKERS \
    SAGA_QUEUE_TYPE SAGA_BROKER_VHOST; do
    if [ -n "${!var+x}" ]; then USER_SET+=("$var=${!var}"); else USER_UNSET+=(-u "$var"); fi
done
restore_stack() {
    [ "${SAGA_TEST_KEEP_STACK:-0}" = 1 ] && return
    if [ "$STACK_WAS_RUNNING" = 1 ]; then
        echo "==> putting the stack back with its own settings (SAGA_TEST_KEEP_STACK=1 skips this)"
        env -u SAGA_SPAN_SINK_URL "${USER_UNSET[@]}" "${USER_SET[@]}" scripts/stack.sh up >/dev/null \
            || echo "could not restore the stack: run make up" >&2
    else
        echo "==> stopping the stack the tests started (SAGA_TEST_KEEP_STACK=1 keeps it)"
        scripts/stack.sh down >/dev/null || true
    fi
}
# The stack under test runs with short retry tiers and deadlines so that parking and
# timeouts are exercised in seconds; the defaults (1,5,30 s and 30 s) are for real use.
export SAGA_RETRY_DELAYS="${SAGA_RETRY_DELAYS:-0.5,1,2}"
export SAGA_ORDER_DEADLINE_SECONDS="${SAGA_ORDER_DEADLINE_SECONDS:-15}"
# Several worker processes on the contended services, as in production (issue 4).
export SAGA_INVENTORY_WORKERS="${SAGA_INVENTORY_WORKERS:-4}"
export SAGA_PAYMENT_WORKERS="${SAGA_PAYMENT_WORKERS:-2}"

# Traces: a span sink (an in-memory OTLP receiver) for the tracing test, and the stack
# under test exporting to it.
SINK_PORT="${SAGA_SPAN_SINK_PORT:-4318}"
scripts/stack.sh deps || exit 1
mkdir -p var/log
"$PY" scripts/span_sink.py --port "$SINK_PORT" > var/log/span-sink.log 2>&1 &
SINK_PID=$!
trap 'kill "$SINK_PID" 2>/dev/null; restore_stack' EXIT
export SAGA_SPAN_SINK_URL="http://127.0.0.1:$SINK_PORT"
OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_ENDPOINT="$SAGA_SPAN_SINK_URL" OTEL_BSP_SCHEDULE_DELAY=200 \
    scripts/stack.sh up || { echo "make up failed; no tests run" >&2; exit 1; }
scripts/stack.sh rabbitmqctl -q add_vhost saga_test >/dev/null 2>&1 || true
scripts/stack.sh rabbitmqctl -q set_permissions -p saga_test saga '.*' '.*' '.*' >/dev/null
rm -rf "$ARTIFACTS"; mkdir -p "$ARTIFACTS"

status=0
step() { printf '\n\033[1m==> %s\033[0m\n' "$1"; shift; "$@" || status=1; }
suite() {  # suite NAME [pytest args...]: exit code 5 (nothing collected) is a failure too
    local name=$1; shift
    step "pytest $name" "$PY" -m pytest -q -p no:cacheprovider --junitxml="$ARTIFACTS/junit-$name.xml" "$@"
}

if [ "$ONLY" = all ]; then
    step "ruff check" .venv/bin/ruff check .
    step "ruff format --check" .venv/bin/ruff format --check .
fi
if [ "$ONLY" = all ] || [ "$ONLY" = unit ]; then
    suite unit tests/unit
fi
for svc in $SERVICES; do
    if [ "$ONLY" = all ] || [ "$ONLY" = "$svc" ]; then
        SAGA_BROKER_URL="$TEST_BROKER_URL" suite "$svc" "tests/$svc" --ds="${svc}_svc.settings" --create-db
    fi
done
if [ "$ONLY" = all ] || [ "$ONLY" = e2e ]; then
    # The browser tests drive Debian's chromium through Playwright (no Playwright browser download).
    if [ ! -x /usr/bin/chromium ]; then
        echo "==> installing chromium (Debian package) for the browser tests"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
            || { echo "could not install chromium; the browser tests need /usr/bin/chromium" >&2; exit 1; }
    fi
    suite e2e tests/e2e
fi
if [ "$ONLY" = all ] || [ "$ONLY" = quorum ]; then
    # The saga paths once more on quorum queues (what a cluster runs: compose.yaml), on a
    # vhost of their own (a queue's type is fixed when it is first declared).
    export SAGA_QUEUE_TYPE=quorum SAGA_BROKER_VHOST=saga_quorum
    step "stack on quorum queues (vhost saga_quorum)" scripts/stack.sh up
    suite quorum tests/e2e/test_quorum.py tests/e2e/test_saga_paths.py::test_saga_path
    unset SAGA_QUEUE_TYPE SAGA_BROKER_VHOST
    step "stack back on classic queues" scripts/stack.sh up
fi
if [ "$ONLY" = all ] || [ "$ONLY" = chaos ]; then
    # It restarts the stack through a flaky proxy, then restores it.
    suite chaos tests/chaos -s
fi
if [ "$ONLY" = all ] || [ "$ONLY" = cluster ]; then
    # Last: make cluster uses the ports of make up's stack, which stops for it (and is put
    # back, or not, by restore_stack). The suite takes the cluster down whatever happens.
    step "stopping make up's stack for the cluster" scripts/stack.sh down
    suite cluster tests/cluster -s
fi

"$PY" scripts/junit_summary.py "$ARTIFACTS"/junit-*.xml || status=1
exit $status
