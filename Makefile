# eslab: the two commands a newcomer needs are `cargo run --release -- demo` and `make test`.
.PHONY: test ensure-postgres fmt-check lint unit-test doc-test doc run-account-example example bench bench-http fuzz
.PHONY: services services-stop integration-test docker-up docker-down schemathesis soak soak-short

CARGO ?= cargo

## test: formatting, lints and the whole test suite (what CI runs); needs PostgreSQL
test: fmt-check lint ensure-postgres unit-test doc-test doc example fuzz schemathesis soak-short

## ensure-postgres: use DATABASE_URL if it answers, else start the local cluster, else explain
ensure-postgres:
	bash scripts/ensure-postgres.sh

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

unit-test:
	$(CARGO) nextest run --workspace --all-features --no-fail-fast

doc-test:
	$(CARGO) test --workspace --all-features --doc

## doc: the API docs build without a warning
doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --workspace --all-features

## run-account-example: the account example, told step by step
run-account-example:
	$(CARGO) run --release -- demo

## example: the inventory example (a second domain on the public API) told step by step; PostgreSQL with DATABASE_URL=postgres://…
example:
	$(CARGO) run -p inventory

## bench: criterion benches with raw baselines (store appends, loads on every store)
bench: ensure-postgres
	$(CARGO) bench -p eslab-postgres --bench append
	$(CARGO) bench -p eslab-sqlite --bench append
	$(CARGO) bench -p eslab-memory --bench load
	$(CARGO) bench -p eslab --bench load
	bash scripts/services.sh start && $(CARGO) bench -p eslab-lab --bench relay
	$(CARGO) bench -p eslab-lab --bench catchup

## bench-console: every console page against 1,000,000 events in PostgreSQL (median and slowest, beside a static file)
.PHONY: bench-console
bench-console: ensure-postgres
	bash scripts/bench-console.sh

## schemathesis: property-based tests of the HTTP API from /openapi.json (no 5xx, responses match the schema); about 1 minute
schemathesis:
	bash scripts/schemathesis.sh

## soak: deposits at a moderate rate on `eslab serve --release` (PostgreSQL) for SOAK_SECONDS (default 300): no errors, bounded RSS growth
soak: ensure-postgres
	bash scripts/soak.sh

## fuzz: every cargo-fuzz target for FUZZ_SECONDS each (default 20; longer by hand)
fuzz:
	bash scripts/fuzz.sh

## lab: every lab experiment at the quick scale; the report goes to lab-report/ (see docs/lab.md)
.PHONY: lab
lab: ensure-postgres
	$(CARGO) run --release -- lab run all --quick --out lab-report

## lab-peers: experiment 11 (eslab beside cqrs-es and disintegrate), built with the `peers` feature, without TLS; into lab-report-peers/
.PHONY: lab-peers
PEERS_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
lab-peers: ensure-postgres
	$(CARGO) run --release -p eslab --features eslab-lab/peers -- lab run peers --quick --out lab-report-peers \
		--database-url '$(PEERS_DATABASE_URL)'

## bench-http: deposits through `eslab serve` on PostgreSQL at 32 connections (wrk) beside two raw INSERT+COMMIT rates (pgbench: a one-index row, an event-shaped row), with CPU µs per deposit (eslab, PostgreSQL)
bench-http: ensure-postgres
	bash scripts/bench-http.sh

## bench-append-sql: what an append's version check costs PostgreSQL alone (pgbench: raw INSERT vs the store's version-row and unique-index append statements, 32 connections, interleaved)
.PHONY: bench-append-sql
bench-append-sql: ensure-postgres
	bash scripts/bench-append-sql.sh

## bench-append-instructions: server instructions per one-event append, each of the store's statements beside the raw INSERT (valgrind callgrind on a scratch cluster: repeatable on a busy machine)
.PHONY: bench-append-instructions
bench-append-instructions:
	bash scripts/bench-append-instructions.sh

## browser: headless Chromium and chromedriver for the console's browser tests (Debian packages; installed if missing)
.PHONY: browser
browser:
	bash scripts/browser.sh

## services: the Kafka-compatible test broker (tansu) on 127.0.0.1:9092 and a 3-server NATS JetStream cluster on 127.0.0.1:14222-14224; installs them if missing
services:
	bash scripts/services.sh start

## services-stop: stop the broker and the NATS cluster `make services` started (nothing else)
services-stop:
	bash scripts/services.sh stop

# The test suite includes the Kafka tests: the broker must answer first.
unit-test: services browser

## integration-test: the fault, bad-input and security checks against the real services (make test runs them too)
integration-test: ensure-postgres services fuzz schemathesis soak-short
	$(CARGO) nextest run -p eslab -p eslab-kafka -p eslab-testing --all-features --no-fail-fast

## soak-short: the soak for 60 s on the debug build (part of make test): no failed request, bounded RSS growth
soak-short: ensure-postgres
	SOAK_SECONDS=60 SOAK_SLICE=15 SOAK_PROFILE=debug bash scripts/soak.sh

## docker-up: PostgreSQL, Kafka, serve, relay and worker in containers (needs Docker)
docker-up:
	docker compose -f deployments/docker-compose.yml up -d --build

## docker-down: stop and remove them
docker-down:
	docker compose -f deployments/docker-compose.yml down
