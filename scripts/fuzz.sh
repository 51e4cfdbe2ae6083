#!/usr/bin/env bash
# Runs every cargo-fuzz target in formats/fuzz/ for SECONDS_PER_TARGET seconds
# (default 60), and prints per target the executions of this run, the corpus
# size, the executions accumulated over every run on this machine, and whether
# a crash was found. Exits 1 if any target crashed (the input is left in
# formats/fuzz/artifacts/TARGET/), 2 if the build fails.
#
#   scripts/fuzz.sh            # CI: 60 s per target (19 targets, ~19 min)
#   scripts/fuzz.sh 3600       # nightly-style: one hour per target
#   FUZZ_SANITIZER=address scripts/fuzz.sh 600   # with AddressSanitizer
#   FUZZ_TARGETS="gpg_key config" scripts/fuzz.sh 300   # some targets only
#
# The corpus accumulates: each target's corpus lives in
# $FUZZ_CORPUS_DIR/TARGET (default ~/.cache/signing-fuzz-corpus, beside the
# fuzz target dir ~/.cache/signing-target-fuzz) and is kept across runs, so
# every run starts where the last one stopped; the committed seeds
# (formats/fuzz/seeds/TARGET, read-only) are read at every start, so a new
# seed (a regression input) is always tried. FUZZ_CORPUS_DIR=$(mktemp -d)
# starts from the seeds alone.
#
# Only stable Rust is needed: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z
# flags. The default sanitizer is none: our crates forbid unsafe code, so the
# fuzzer hunts panics, overflows (debug assertions are on), hangs and memory
# blow-ups; ASan is for runs long enough to afford its slower build and runs.
# See docs/FUZZING.md.
set -uo pipefail
secs=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
fuzz=$root/formats/fuzz
sanitizer=${FUZZ_SANITIZER:-none}
target_dir=${FUZZ_TARGET_DIR:-$HOME/.cache/signing-target-fuzz}
corpus_root=${FUZZ_CORPUS_DIR:-$HOME/.cache/signing-fuzz-corpus}
export RUSTC_BOOTSTRAP=1

say() { printf '==> %s\n' "$*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    cargo install cargo-fuzz --locked || exit 2
fi

cd "$fuzz" || exit 2
flags=(--sanitizer "$sanitizer" --debug-assertions --target-dir "$target_dir")
say "building the fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build "${flags[@]}" || exit 2

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=0
printf '%-20s %12s %8s %7s %14s  %s\n' TARGET EXECUTIONS EXEC/S CORPUS ALL-RUNS RESULT
# FUZZ_TARGETS="gpg_key apple_macho" runs only those.
for t in ${FUZZ_TARGETS:-$(cargo fuzz list)}; do
    mkdir -p "$corpus_root/$t"
    # The first corpus dir receives new inputs; the committed seeds are read-only.
    cargo fuzz run "${flags[@]}" "$t" "$corpus_root/$t" "$fuzz/seeds/$t" -- \
        -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$logs/$t.log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t.log" | tail -1)
    # Executions accumulated over every run that used this corpus.
    total_file=$corpus_root/$t.executions
    total=$(( $(cat "$total_file" 2>/dev/null || echo 0) + ${execs:-0} ))
    echo "$total" > "$total_file"
    inputs=$(find "$corpus_root/$t" -type f | wc -l)
    if [ "$rc" -eq 0 ]; then
        result=ok
    else
        result="CRASH (exit $rc): $(grep -m1 -o 'Test unit written to .*' "$logs/$t.log" || echo 'see log')"
        failed=1
        tail -40 "$logs/$t.log" >&2
    fi
    printf '%-20s %12s %8s %7s %14s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$inputs" "$total" "$result"
done
exit "$failed"
