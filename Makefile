# eslab: the two commands a newcomer needs are `make run-account-example` and `make test`.
.PHONY: test fmt-check lint unit-test doc-test run-account-example

CARGO ?= cargo

## test: formatting, lints and the whole test suite (what CI runs)
test: fmt-check lint unit-test doc-test

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

unit-test:
	$(CARGO) nextest run --workspace --all-features --no-fail-fast

doc-test:
	$(CARGO) test --workspace --all-features --doc

## run-account-example: the account example, told step by step
run-account-example:
	$(CARGO) run --release -- demo
