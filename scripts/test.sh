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

# The house rules first: they fail in seconds, the build and tests take minutes.
say "checking the formatting (cargo fmt --all --check)"
cargo fmt --all --check
say "linting (cargo clippy --workspace --all-targets --locked -- -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "building (target dir: $CARGO_TARGET_DIR)"
cargo build --workspace --bins --tests --locked

# The tests first, so a failing test fails the run in minutes (issue 26). Their summary is
# kept and said again as the run's last line, after the fuzzing.
say "running the tests"
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
set +e
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast 2>&1 | tee "$summary"
    tests_rc=${PIPESTATUS[0]}
else
    cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$summary"
    tests_rc=${PIPESTATUS[0]}
fi
set -e
if [ "$tests_rc" != 0 ]; then
    say "the tests failed (exit $tests_rc): not fuzzing"
    exit "$tests_rc"
fi

# Every parser we own, fuzzed on a corpus kept across runs under ~/.cache
# (docs/FUZZING.md: 60 s per target by default, the trade-off is discussed there); a
# crash fails the run. SIGNING_FUZZ_SECONDS=0 skips it (e.g. on a laptop); longer runs:
# scripts/fuzz.sh 3600.
if [ "${SIGNING_FUZZ_SECONDS:-60}" != 0 ]; then
    say "fuzzing every parser for ${SIGNING_FUZZ_SECONDS:-60} s each"
    bash scripts/fuzz.sh "${SIGNING_FUZZ_SECONDS:-60}"
fi

# The tests' verdict closes the output (nextest's own summary line, or cargo test's).
say "the tests, as run before the fuzzing:"
grep -E '^ *Summary .* tests? run|^test result:' "$summary" | tail -n 1
