#!/bin/sh
# Entry point of every container of the application image (Dockerfile): adds the
# container's own addresses to SAGA_ALLOWED_HOSTS, then runs the command.
#
# Why: Prometheus scrapes each web replica by its IP (dns_sd_configs in
# deploy/prometheus/prometheus.yml), so its requests carry "Host: <ip>:<port>", which
# Django refuses unless the address is allowed; the replicas' addresses are only known
# inside each container. Unset SAGA_ALLOWED_HOSTS stays unset (Django's defaults).
set -eu
if [ -n "${SAGA_ALLOWED_HOSTS:-}" ]; then
    own="$(hostname -i 2>/dev/null | tr -s ' ' ',')" || own=""
    if [ -n "$own" ]; then
        export SAGA_ALLOWED_HOSTS="$SAGA_ALLOWED_HOSTS,$own"
    fi
fi
exec "$@"
