#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds once, runs every test.
#   ./scripts/test.sh            (CI runs exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

say "checking the TLS stack: rustls with ring only (no aws-lc-rs, no openssl-sys for TLS)"
if cargo tree --workspace -e normal -i aws-lc-rs >/dev/null 2>&1; then
    echo "error: aws-lc-rs is in the dependency tree; keep one crypto provider (ring)" >&2
    cargo tree --workspace -e normal -i aws-lc-rs >&2
    exit 1
fi

say "building (target dir: $CARGO_TARGET_DIR)"
cargo build --workspace --bins --tests --locked

say "running the tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
