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
# The in-process tailnet (feature `tailscale`, ~300 more crates) is not in the build above:
# lint it too, so tailnet/device.rs cannot rot unseen. Check-only, nothing of it is linked.
cargo clippy --workspace --all-targets --locked --features nebula-gateway/tailscale -- -D warnings

echo "== unit and crate tests"
cargo test --workspace --locked

echo "== real-client conformance suite"
export NEBULA_GATEWAY_BIN="$PWD/target/debug/nebula-gateway"
python3 -m pytest conformance-tests -v -p no:cacheprovider "$@"
