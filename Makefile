# ferrite: `make demo` runs the main job on the default model, `make test` runs every test.
CARGO ?= cargo
FERRITE = target/release/ferrite

.PHONY: setup build demo test lint bench clean-assets

setup:
	bash scripts/setup.sh

build:
	$(CARGO) build --release

demo: setup build
	$(FERRITE) generate --threads 2 -n 48 --chat -p "What is the capital of France? Answer in one sentence."
	$(FERRITE) generate --threads 2 -n 64 -p "The capital of France is"

# Release mode: tensor code is 10-50x slower unoptimised. Integration tests need `make setup`.
test: setup
	$(CARGO) test --release --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings
