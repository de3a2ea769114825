# The order saga platform — see README.md.
SHELL := /bin/bash
STACK := scripts/stack.sh
PY := .venv/bin/python

CLUSTER := $(PY) scripts/cluster.py

.PHONY: up down restart demo chaos bench bench-map test ctl lint fmt deps rabbitmqctl audit test-unit test-integration test-e2e \
	cluster cluster-down cluster-status cluster-ctl cluster-rabbitmqctl cluster-chaos

up:            ## install what is missing, start everything, wait for health
	@$(STACK) up

restart:       ## migrate and restart every service process (after a code change)
	@$(STACK) restart

down:          ## stop everything `make up` started; data is kept
	@$(STACK) down

demo:          ## place one order per saga path and print each timeline (on make up's stack, or the cluster)
	@$(STACK) ready && $(PY) scripts/demo.py

test:          ## lint, then the whole suite against real PostgreSQL, RabbitMQ and processes
	@scripts/test.sh

CHAOS_FAULTS := kill,rabbitmq,postgres,duplicate,delay,network
chaos: up      ## load + faults, then the audit: make chaos DURATION=900 RATE=4 FAULTS=kill,rabbitmq,...
	@$(PY) scripts/chaos.py --duration $(or $(DURATION),120) --rate $(or $(RATE),4) \
		--faults $(or $(FAULTS),$(CHAOS_FAULTS)) $(ARGS)

BENCH_ARGS := --scale 1,2,4 --cores auto --ab SAGA_BATCH_MAX=1 --rounds 4
bench: up      ## throughput and latency against the raw ceilings, on 1, 2 … cores, group commit A/B (≈25 min): make bench ARGS="--smoke"
	@$(PY) scripts/bench.py $(or $(ARGS),$(BENCH_ARGS))

bench-map: up  ## how long the saga map takes with 1 000 000 orders (a scratch database; ≈ 2 min): ARGS="--orders 100000"
	@$(PY) scripts/bench_map.py $(ARGS)

ctl:           ## supervisorctl for this stack: make ctl ARGS="restart order-worker"
	@$(STACK) ctl $(or $(ARGS),status)

rabbitmqctl:   ## rabbitmqctl for our node: make rabbitmqctl ARGS="list_queues -p saga"
	@$(STACK) rabbitmqctl $(ARGS)

audit:         ## check SPEC §5 across the four databases: make audit ARGS="--json report.json"
	@$(STACK) client $(PY) manage.py audit $(ARGS)

cluster: deps  ## the same system on six hosts (network namespaces): 3 RabbitMQ nodes, PostgreSQL, 2 app hosts
	@$(CLUSTER) up

cluster-down:  ## remove every namespace, link and process of the cluster (data kept; ARGS=--purge drops it)
	@$(CLUSTER) down $(ARGS)

cluster-status: ## the cluster's hosts, what runs on each, its nodes and URLs
	@$(CLUSTER) status

cluster-ctl:   ## supervisorctl of one host: make cluster-ctl HOST=saga-app-1 ARGS="stop order-worker"
	@$(CLUSTER) ctl $(or $(HOST),saga-app-1) $(or $(ARGS),status)

cluster-rabbitmqctl: ## rabbitmqctl of one node: make cluster-rabbitmqctl HOST=saga-rabbit-2 ARGS=cluster_status
	@$(CLUSTER) rabbitmqctl $(or $(HOST),saga-rabbit-1) $(ARGS)

cluster-chaos: ## load + host, node, partition and database faults on the cluster, then the audit: DURATION=900 RATE=4
	@$(PY) scripts/cluster_chaos.py --duration $(or $(DURATION),300) --rate $(or $(RATE),4) $(ARGS)

deps:
	@$(STACK) deps

lint: deps
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .

fmt: deps
	@.venv/bin/ruff format . && .venv/bin/ruff check --fix .
