# The order saga platform — see README.md.
SHELL := /bin/bash
STACK := scripts/stack.sh
PY := .venv/bin/python

.PHONY: up down restart demo chaos bench test ctl lint fmt deps rabbitmqctl audit test-unit test-integration test-e2e

up:            ## install what is missing, start everything, wait for health
	@$(STACK) up

restart:       ## migrate and restart every service process (after a code change)
	@$(STACK) restart

down:          ## stop everything `make up` started; data is kept
	@$(STACK) down

demo: up       ## place one order per saga path and print each timeline
	@$(PY) scripts/demo.py

test:          ## lint, then the whole suite against real PostgreSQL, RabbitMQ and processes
	@scripts/test.sh

CHAOS_FAULTS := kill,rabbitmq,postgres,duplicate,delay,network
chaos: up      ## load + faults, then the audit: make chaos DURATION=900 RATE=4 FAULTS=kill,rabbitmq,...
	@$(PY) scripts/chaos.py --duration $(or $(DURATION),120) --rate $(or $(RATE),4) \
		--faults $(or $(FAULTS),$(CHAOS_FAULTS)) $(ARGS)

BENCH_ARGS := --scale 1,2,4 --cores auto --ab SAGA_BATCH_MAX=1 --rounds 4
bench: up      ## throughput and latency against the raw ceilings, on 1, 2 … cores, group commit A/B (≈25 min): make bench ARGS="--smoke"
	@$(PY) scripts/bench.py $(or $(ARGS),$(BENCH_ARGS))

ctl:           ## supervisorctl for this stack: make ctl ARGS="restart order-worker"
	@$(STACK) ctl $(or $(ARGS),status)

rabbitmqctl:   ## rabbitmqctl for our node: make rabbitmqctl ARGS="list_queues -p saga"
	@$(STACK) rabbitmqctl $(ARGS)

audit:         ## check SPEC §5 across the four databases: make audit ARGS="--json report.json"
	@$(PY) manage.py audit $(ARGS)

deps:
	@$(STACK) deps

lint: deps
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .

fmt: deps
	@.venv/bin/ruff format . && .venv/bin/ruff check --fix .
