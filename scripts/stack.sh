#!/usr/bin/env bash
# The local stack: install what is missing, start, stop. Called by the Makefile.
#   scripts/stack.sh up | down | deps | python | ctl ARGS... | rabbitmqctl ARGS... | wait
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VAR="$ROOT/var"
VENV="${SAGA_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
SERVICES=$(cd "$ROOT" && python3 -m common.services)  # the one list: common/services.py
CONF="$VAR/supervisord.conf"
AMQP_PORT="${SAGA_AMQP_PORT:-5672}"
MGMT_PORT="${SAGA_RABBITMQ_MGMT_PORT:-15672}"
PG_VERSION="${SAGA_PG_VERSION:-15}"
PG_CLUSTER="${SAGA_PG_CLUSTER:-main}"
declare -A PORTS=([order]="${SAGA_ORDER_PORT:-8001}" [payment]="${SAGA_PAYMENT_PORT:-8002}"
                  [inventory]="${SAGA_INVENTORY_PORT:-8003}" [shipping]="${SAGA_SHIPPING_PORT:-8004}")

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_postgres() { runuser -u postgres -- "$@"; }

# The interpreter a new virtualenv is made from: SAGA_PYTHON if set, else the OS's own
# Python 3.11 (Debian's /usr/bin/python3.11 is built with profile-guided and link-time
# optimisation, its executable linked with libpython statically), else python3. The
# interpreter is part of the saga's speed: pyenv's default build (no PGO, libpython
# shared) ran the services' processes with 13 % more CPU (docs/performance.md).
venv_python() {
    if [ -n "${SAGA_PYTHON:-}" ]; then
        echo "$SAGA_PYTHON"
    elif [ -x /usr/bin/python3.11 ] && /usr/bin/python3.11 -c 'import ensurepip, venv' 2>/dev/null; then
        echo /usr/bin/python3.11
    else
        echo python3
    fi
}

# The interpreter an existing virtualenv was made from (pyvenv.cfg), resolved.
venv_made_from() {
    local made
    made=$(sed -n 's/^executable *= *//p' "$VENV/pyvenv.cfg" 2>/dev/null)
    [ -n "$made" ] && readlink -m "$made"
}

deps() {
    local base made
    base=$(venv_python)
    if [ ! -x "$PY" ]; then
        log "creating virtualenv $VENV from $base ($("$base" -c 'import sys; print(sys.version.split()[0])'))"
        "$base" -m venv "$VENV" || die "could not create a virtualenv with $base (set SAGA_PYTHON to another Python 3.11)"
    elif [ -z "${SAGA_PYTHON:-}" ] && [ "$base" != python3 ]; then
        made=$(venv_made_from || true)
        if [ -n "$made" ] && [ "$made" != "$(readlink -f "$(command -v "$base")")" ]; then
            echo "note: $VENV was made from $made, not $base, which runs the saga with less CPU;" \
                "to rebuild it: make down && rm -rf $VENV && make up" >&2
        fi
    fi
    local stamp="$VENV/.requirements.sha"
    local want
    want=$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "installing Python dependencies (requirements.txt)"
        # (this machine's pip.conf may name local indexes that do not exist: hide that noise)
        "$PY" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements.txt" 2>&1 \
            | { grep -v '^WARNING: Location .* is ignored' || true; }
        [ "${PIPESTATUS[0]}" -eq 0 ] || die "pip install failed"
        echo "$want" > "$stamp"
    fi
}

# install_package PACKAGE EXECUTABLE: apt-get install PACKAGE unless EXECUTABLE exists.
install_package() {
    local package=$1 executable=$2
    if [ -x "$executable" ]; then return; fi
    command -v apt-get >/dev/null || die "$package is missing and apt-get is not available; install $package"
    log "installing $package from the OS packages (apt-get install $package)"
    # Keep the package from starting its own system-wide server: we run ours under supervisor.
    local guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        guard=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null
    [ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d
    [ -x "$executable" ] || die "$package did not install"
}

install_rabbitmq() { install_package rabbitmq-server /usr/lib/rabbitmq/bin/rabbitmq-server; }

# The cluster of `make cluster` (scripts/cluster.py) and this stack use the same ports on
# 127.0.0.1: only one of them runs at a time.
cluster_running() { [ -e "$VAR/cluster/running.json" ] || ip netns list 2>/dev/null | grep -q '^saga-'; }

start_postgres() {
    command -v pg_ctlcluster >/dev/null || die "PostgreSQL $PG_VERSION is not installed (need pg_ctlcluster)"
    if ! pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1==v && $2==c && $4=="online"' | grep -q .; then
        log "starting PostgreSQL $PG_VERSION/$PG_CLUSTER"
        pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start
        touch "$VAR/run/postgres-started-by-stack"
    fi
    for _ in $(seq 1 30); do
        as_postgres psql -qAtc 'select 1' >/dev/null 2>&1 && return
        sleep 1
    done
    die "PostgreSQL did not accept connections within 30s"
}

setup_databases() {
    local svc role db
    for svc in $SERVICES; do
        role="saga_$svc"; db="saga_$svc"
        if ! as_postgres psql -qAtc "select 1 from pg_roles where rolname='$role'" | grep -q 1; then
            log "creating PostgreSQL role $role"
            # CREATEDB: the test suite creates test_<db> for its integration tests.
            as_postgres psql -qc "create role $role login createdb password '$role'"
        fi
        if ! as_postgres psql -qAtc "select 1 from pg_database where datname='$db'" | grep -q 1; then
            log "creating database $db"
            as_postgres psql -qc "create database $db owner $role"
            as_postgres psql -qc "revoke all on database $db from public"
        fi
    done
}

rabbitmq_files() {
    mkdir -p "$VAR/rabbitmq/mnesia" "$VAR/log/rabbitmq"
    cat > "$VAR/rabbitmq/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
loopback_users = none
log.file.level = warning
EOF
    echo "[rabbitmq_management]." > "$VAR/rabbitmq/enabled_plugins"
    echo "[{kernel, [{inet_dist_use_interface, {127,0,0,1}}]}]." > "$VAR/rabbitmq/advanced.config"
    : > "$VAR/rabbitmq/rabbitmq-env.conf"
}

rmqctl() {
    if [ -n "${SAGA_RABBITMQCTL:-}" ]; then  # another node's (scripts/cluster.py: a cluster node's)
        # shellcheck disable=SC2086
        $SAGA_RABBITMQCTL "$@"
        return
    fi
    # shellcheck disable=SC1090
    ( eval "$("$PY" "$ROOT/scripts/supervisor_conf.py" --rabbitmq-env)"; /usr/lib/rabbitmq/bin/rabbitmqctl "$@" )
}

supervisord_running() {
    [ -S "$VAR/run/supervisor.sock" ] && "$VENV/bin/supervisorctl" -c "$CONF" pid >/dev/null 2>&1
}

ctl() {
    if ! supervisord_running && cluster_running; then
        die "make up's stack is not running, the cluster is: make cluster-ctl HOST=saga-app-1 ARGS=\"$*\""
    fi
    "$VENV/bin/supervisorctl" -c "$CONF" "$@"
}

prometheus_dirs() {
    local svc
    for svc in $SERVICES; do mkdir -p "$VAR/prometheus/$svc"; done
}

supervisord_section() { [ -f "$1" ] && awk '/^\[/{on=($0=="[supervisord]")} on' "$1"; }

start_supervisor() {
    prometheus_dirs
    "$PY" "$ROOT/scripts/supervisor_conf.py" > "$CONF.new"
    if supervisord_running && [ "$(supervisord_section "$CONF")" != "$(supervisord_section "$CONF.new")" ]; then
        # Programs inherit supervisord's own environment: only a new supervisord applies it.
        log "supervisord's own settings changed: restarting the stack"
        down
    fi
    mv "$CONF.new" "$CONF"
    if supervisord_running; then
        "$PY" "$ROOT/scripts/supervise.py" "$VAR/run/supervisor.sock"
        ctl update >/dev/null
    else
        # Metrics files of processes from an earlier run: a fresh start counts from zero.
        rm -rf "$VAR/prometheus"
        prometheus_dirs
        log "starting supervisord (config $CONF)"
        "$VENV/bin/supervisord" -c "$CONF"
    fi
    ctl start rabbitmq >/dev/null 2>&1 || true
}

configure_rabbitmq() {
    log "waiting for RabbitMQ"
    local ok=""
    local deadline=$((SECONDS + 90))
    while [ $SECONDS -lt $deadline ]; do
        if rmqctl -q await_startup --timeout 5 >/dev/null 2>&1; then ok=1; break; fi
        sleep 1
    done
    [ -n "$ok" ] || die "RabbitMQ did not start within 90s; see $VAR/log/rabbitmq.log and $VAR/log/rabbitmq/"
    broker_users
}

# The vhosts, the administrator saga and the services' own users (also on a cluster's node).
broker_users() {
    # The services' vhost (SAGA_BROKER_VHOST, default saga; make test runs the saga paths
    # once more on saga_quorum with quorum queues) and the operators' vhost saga.
    local vhost
    for vhost in saga ${SAGA_BROKER_VHOST:-saga}; do
        rmqctl -q add_vhost "$vhost" 2>/dev/null || true
    done
    if ! rmqctl -q list_users | awk '{print $1}' | grep -qx saga; then
        rmqctl -q add_user saga saga >/dev/null
    fi
    rmqctl -q set_user_tags saga administrator >/dev/null
    for vhost in saga ${SAGA_BROKER_VHOST:-saga}; do
        rmqctl -q set_permissions -p "$vhost" saga '.*' '.*' '.*' >/dev/null
    done
    service_users "${SAGA_BROKER_VHOST:-saga}"
}

# Each service connects as saga_<service> (common/settings.py: broker_url), allowed to
# declare and use its own queues and exchanges, publish to saga.events, and nothing of
# the other services: reading another service's queue is refused by the broker.
# configure: what it declares; write: where it publishes (amq.default: replays and
# copies to its own queue) and which queues it binds; read: what it consumes, and the
# exchanges it binds its queues to (saga.events, saga.unroutable, Celery's pidbox).
service_users() {
    local vhost=$1 svc user password password_var upper own pidbox
    for svc in $SERVICES; do
        user="saga_$svc"
        upper=$(echo "$svc" | tr '[:lower:]' '[:upper:]')
        password_var="SAGA_${upper}_AMQP_PASSWORD"
        password="${!password_var:-saga_$svc}"
        if rmqctl -q list_users | awk '{print $1}' | grep -qx "$user"; then
            rmqctl -q change_password "$user" "$password" >/dev/null
        else
            rmqctl -q add_user "$user" "$password" >/dev/null
        fi
        rmqctl -q set_user_tags "$user" >/dev/null  # no management UI access
        own="${svc}\\..+"
        pidbox="${svc}-[0-9]+@.+\\.celery\\.pidbox"
        rmqctl -q set_permissions -p "$vhost" "$user" \
            "^(saga\\.events|saga\\.unroutable|$own|$pidbox|celery\\.pidbox|reply\\.celery\\.pidbox|celeryev)\$" \
            "^(saga\\.events|saga\\.unroutable|$own|$pidbox|amq\\.default|celery\\.pidbox|reply\\.celery\\.pidbox|celeryev)\$" \
            "^(saga\\.events|saga\\.unroutable|$own|$pidbox|celery\\.pidbox)\$" >/dev/null
    done
}

prepare_services() {
    local svc pids=() failed=0
    log "migrate, admin user and topology of each service"
    for svc in $SERVICES; do
        "$PY" "$ROOT/manage.py" "$svc" prepare > "$VAR/log/prepare-$svc.log" 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    if [ "$failed" -ne 0 ]; then
        tail -n 20 "$VAR"/log/prepare-*.log >&2
        die "preparing a service failed (see $VAR/log/prepare-*.log)"
    fi
    "$PY" "$ROOT/manage.py" order collectstatic --noinput -v 0
}

wait_healthy() {
    "$PY" "$ROOT/scripts/wait_healthy.py" --timeout "${SAGA_HEALTH_TIMEOUT:-90}" \
        "${PORTS[order]}" "${PORTS[payment]}" "${PORTS[inventory]}" "${PORTS[shipping]}" \
        || { ctl status || true; die "a service did not become healthy; see $VAR/log/"; }
}

up() {
    local started=$SECONDS
    ! cluster_running || die "the cluster of make cluster is running on the same ports; make cluster-down first"
    mkdir -p "$VAR/run" "$VAR/log"
    deps
    install_rabbitmq
    install_package graphviz /usr/bin/dot  # the saga map on the Order admin's home lays out with dot
    start_postgres
    setup_databases
    rabbitmq_files
    start_supervisor
    configure_rabbitmq
    prepare_services
    log "starting the services"
    # Flower last: it asks the workers which queues they consume when it starts.
    ctl start $(ctl status | awk '{print $1}' | grep -v '^flower$' | sed 's/:.*/:*/' | sort -u) >/dev/null || true
    wait_healthy
    ctl start flower >/dev/null || true
    ctl status
    cat <<EOF

The order saga platform is up ($((SECONDS - started))s).
  Order      http://127.0.0.1:${PORTS[order]}/api/orders/     admin http://127.0.0.1:${PORTS[order]}/admin/ (the saga map)
  Payment    http://127.0.0.1:${PORTS[payment]}/api/accounts/   admin http://127.0.0.1:${PORTS[payment]}/admin/
  Inventory  http://127.0.0.1:${PORTS[inventory]}/api/products/   admin http://127.0.0.1:${PORTS[inventory]}/admin/
  Shipping   http://127.0.0.1:${PORTS[shipping]}/api/shipments/  admin http://127.0.0.1:${PORTS[shipping]}/admin/
  API docs   http://127.0.0.1:<port>/api/docs/   health /healthz   metrics /metrics
  Flower     http://127.0.0.1:${SAGA_FLOWER_PORT:-5555}/
  RabbitMQ   amqp://saga:saga@127.0.0.1:$AMQP_PORT/saga   management http://127.0.0.1:$MGMT_PORT/ (saga/saga)
  API token  ${SAGA_API_TOKEN:-dev-token} (development only)   admin login admin/admin (development only)
EOF
}

down() {
    if supervisord_running; then
        log "stopping every process (supervisord shutdown)"
        ctl shutdown >/dev/null
        for _ in $(seq 1 60); do
            [ -e "$VAR/run/supervisord.pid" ] && kill -0 "$(cat "$VAR/run/supervisord.pid")" 2>/dev/null || break
            sleep 1
        done
    else
        log "supervisord is not running"
    fi
    if [ -e "$VAR/run/postgres-started-by-stack" ]; then
        log "stopping PostgreSQL $PG_VERSION/$PG_CLUSTER (started by make up)"
        pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop || true
        rm -f "$VAR/run/postgres-started-by-stack"
    fi
    log "stopped; data kept in PostgreSQL and $VAR/rabbitmq"
}

restart() {
    supervisord_running || die "the stack is not running; use make up"
    prepare_services
    log "restarting every service process (new code, same data)"
    local programs
    programs=$(ctl status | awk '{print $1}' | grep -v '^rabbitmq$' | sed 's/:.*/:*/' | sort -u)
    # shellcheck disable=SC2086
    ctl restart $(echo "$programs" | grep -v '^flower$') >/dev/null
    wait_healthy
    ctl restart flower >/dev/null
    ctl status
}

case "${1:-}" in
    up) up ;;
    restart) restart ;;
    down) down ;;
    deps) deps ;;
    python) venv_python ;;
    wait) wait_healthy ;;
    running) supervisord_running ;;
    ctl) shift; ctl "$@" ;;
    install) shift; install_package "$@" ;;
    ready)  # what make demo needs: the cluster if it runs, else make up's stack
        if cluster_running; then
            deps
            "$PY" "$ROOT/scripts/wait_healthy.py" --timeout 60 "${PORTS[@]}" || die "the cluster is not healthy: make cluster-status"
        else
            up
        fi ;;
    broker-users) broker_users ;;
    client)  # run a client of the platform (the audit, the demo) against what is running
        shift
        if cluster_running; then
            # The databases of the cluster are on its host saga-db (scripts/cluster.py).
            SAGA_DB_HOST=$("$PY" "$ROOT/scripts/cluster.py" address saga-db) || die "the cluster is not up"
            export SAGA_DB_HOST
        fi
        exec "$@" ;;
    rabbitmqctl) shift; rmqctl "$@" ;;
    *) die "usage: scripts/stack.sh up|down|restart|deps|python|wait|running|ctl ARGS|rabbitmqctl ARGS|ready|install PACKAGE EXECUTABLE|broker-users|client COMMAND..." ;;
esac
