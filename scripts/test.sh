#!/usr/bin/env bash
# Runs every test: lint, unit tests, and the real-client suite against the real binary.
# Installs what it needs first (Debian packages, pinned PyPI/npm clients).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --test

echo "== build (one profile for the binaries and the tests)"
cargo build --workspace --all-targets --locked

echo "== lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== unit and crate tests"
cargo test --workspace --locked

echo "== real-client conformance suite"
export NEBULA_GATEWAY_BIN="$PWD/target/debug/nebula-gateway"
python3 -m pytest conformance-tests -v -p no:cacheprovider "$@"
