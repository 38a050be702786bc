#!/usr/bin/env bash
# Installs what the gateway needs, builds it and runs it on the defaults: data in ./data,
# SQLite catalog there, keys generated on first start and printed with the endpoint.
# Extra arguments go to `nebula-gateway serve` (e.g. --listen 0.0.0.0:9000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --locked -p nebula-gateway
exec target/debug/nebula-gateway serve "$@"
