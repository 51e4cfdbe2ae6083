#!/usr/bin/env bash
# Digest signing figures (issue 16): NOT part of the pass/fail tests.
#   ./scripts/bench-digest.sh             256 MiB and 1 GiB gpg, a 200 MiB PE, a 200 MiB MAR
#   ./scripts/bench-digest.sh --no-write  print the table only; do not rewrite docs/BENCHMARKS.md
# Builds the release binaries, starts one signing-server (TLS on loopback) whose gpg,
# mar_sha384 and authenticode formats say `digest_signing = yes`, and measures on the
# same files, in the same run:
#   - gpg end to end (signtool, digest signing) vs `openssl dgst -sha256` of the file;
#   - gpg end to end with --whole-file (the upload) vs `openssl dgst -sha256`;
#   - a 200 MiB PE end to end (digest signing) vs a local `osslsigncode sign` (neither
#     timestamps, so the TSA's latency is out of both);
#   - a 200 MiB MAR end to end (digest signing) vs `openssl dgst -sha384`;
#   - bytes the server received per signing (signing_received_bytes_total{format});
#   - server CPU per digest signing (utime + stime of the server) for 1 KiB and 1 GiB.
# Every output is checked once with gpgv / osslsigncode verify / mar -v -k.
# Writes the table to docs/BENCHMARKS.md between the "bench-digest.sh" markers.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cmdline="./scripts/bench-digest.sh $*"
write=1
for a in "$@"; do
    case $a in
        --no-write) write=0 ;;
        *) echo "usage: $0 [--no-write]" >&2; exit 2 ;;
    esac
done

source scripts/setup.sh
say "building release binaries (target dir: $CARGO_TARGET_DIR)"
cargo build --release --workspace --bins --locked -q
rel="$CARGO_TARGET_DIR/release"
MARTOOL="$SIGNING_TEST_VENV/bin/mar"
PASS="$repo/certs/PASSPHRASE"
C="$repo/certs"
reps=3
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-digest.XXXXXX")
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

now_ns() { date +%s%N; }
median_ms() { # N CMD...: median wall ms of N runs, each preceded by `pre` (untimed)
    local n=$1 i s e; shift
    local ts=()
    for ((i = 0; i < n; i++)); do
        [ -n "${pre:-}" ] && eval "$pre"
        s=$(now_ns)
        if ! "$@" >"$work/last.out" 2>"$work/last.err"; then
            echo "command failed: $*" >&2; cat "$work/last.err" >&2; echo "FAIL"; return 0
        fi
        e=$(now_ns)
        ts+=($(((e - s) / 1000)))
    done
    printf '%s\n' "${ts[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "FAIL" || b == "FAIL" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
rows=()
row() { rows+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); printf '%-48s %-8s %12s %12s %7s  %s\n' "$1" "$2" "$3" "$4" "$5" "$6"; }
printf '%-48s %-8s %12s %12s %7s  %s\n' "measurement" "size" "ours" "reference" "ratio" "reference / target"

say "making the inputs (random data)"
rnd() { { openssl enc -aes-128-ctr -pass pass:"$2" -nosalt -pbkdf2 -in /dev/zero 2>/dev/null || true; } | head -c "$1"; }
rnd $((1024 * 1024 * 1024)) g1 >"$work/g1G.bin"
head -c $((256 * 1024 * 1024)) "$work/g1G.bin" >"$work/g256M.bin"
head -c 1024 "$work/g1G.bin" >"$work/g1K.bin"
# A 200 MiB PE: a 200 MiB .rdata section (mingw-w64, .incbin).
rnd $((200 * 1024 * 1024)) pe >"$work/blob.bin"
cat >"$work/pe.c" <<'EOF'
#include <stdio.h>
extern const char blob[];
__asm__(".section .rdata,\"dr\"\n.globl blob\nblob:\n.incbin \"blob.bin\"\n.text\n");
int main(void) { printf("%d\n", blob[0]); return 0; }
EOF
(cd "$work" && x86_64-w64-mingw32-gcc -O1 -o in.exe pe.c)
mkdir -p "$work/mar-src" && mv "$work/blob.bin" "$work/mar-src/payload.bin"
"$MARTOOL" -C "$work/mar-src" -V 1.0 -H bench -c "$work/in.mar" payload.bin
rm -rf "$work/mar-src"

cat >"$work/signing.ini" <<EOF
[server]
listen = 127.0.0.1
port = 0
tls_cert = $C/server-chain.pem
tls_key = $C/server.key
work_dir = $work/server
long_poll = 30

[security]
allowed_ips = 127.0.0.0/8
new_token_allowed_ips = 127.0.0.1
new_token_auth = bench:bench-minting-password
token_secret = bench-token-secret-0123456789
max_token_age = 3600
allowed_filenames = .+
max_filesize = 2G

[logging]
level = warn

[format:gpg]
type = gpg
key = $C/gpg/secret.asc
digest_signing = yes

[format:mar_sha384]
type = mar
key = $C/mar/sha384-4096.key
digest = sha384
digest_signing = yes

[format:sha2signcode]
type = authenticode
key = $C/authenticode/rsa.key
cert = $C/authenticode/rsa-chain.pem
digest_signing = yes
EOF
{ cat "$PASS"; echo; cat "$PASS"; echo; cat "$PASS"; echo; } | "$rel/signing-server" "$work/signing.ini" >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 1 300); do
    grep -q "listening on" "$work/server.out" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
url=$(sed -n 's/^listening on https:\/\///p' "$work/server.out" | head -1)
printf 'bench-minting-password\n' >"$work/mint-pw"
"$rel/signtool" token -H "$url" -c "$C/ca.pem" -u bench --password-file "$work/mint-pw" -i 127.0.0.1 -d 3600 -o "$work/token" 2>/dev/null
st() { "$rel/signtool" sign -q -H "$1:$url" -c "$C/ca.pem" -t "$work/token" --no-shuffle -f "$1" "${@:2}"; }
received() { curl -s --cacert "$C/ca.pem" "https://$url/metrics" | sed -n "s/^signing_received_bytes_total{format=\"$1\"} //p" | head -1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
hz=$(getconf CLK_TCK)

# ---------------------------------------------------------------- gpg
say "gpg: digest signing vs openssl dgst -sha256, and the whole-file path"
declare -A dgst
for s in 256M 1G; do
    f="$work/g$s.bin"; label=$([ $s = 1G ] && echo "1 GiB" || echo "256 MiB")
    dgst[$s]=$(median_ms $reps openssl dgst -sha256 "$f")
    b0=$(received gpg)
    pre="rm -f $f.asc"
    e2e=$(median_ms $reps st gpg "$f")
    pre=""
    b1=$(received gpg)
    gpgv --keyring "$C/gpg/public.gpg" "$f.asc" "$f" 2>/dev/null || echo "WARNING: digest-signed gpg does not verify" >&2
    row "gpg e2e, digest signing (signtool)" "$label" "$e2e ms" "${dgst[$s]} ms" "$(ratio "$e2e" "${dgst[$s]}")" "openssl dgst -sha256; target <= 1.2"
    row "  bytes received by the server per signing" "$label" "$(( (${b1:-0} - ${b0:-0}) / reps )) B" "-" "-" "target < 65536"
done
# The whole-file path: each run changes the file's first bytes, so the server signs anew.
f="$work/g256M.bin"; i=0
pre='i=$((i + 1)); printf "%08d" $i | dd of=$f bs=1 seek=0 conv=notrunc status=none; rm -f $f.asc'
whole=$(median_ms $reps st gpg --whole-file "$f")
# One more, alone, for the bytes it costs.
printf "%08d" 999 | dd of="$f" bs=1 seek=0 conv=notrunc status=none; rm -f "$f.asc"
b0=$(received gpg)
st gpg --whole-file "$f"
b1=$(received gpg)
pre=""
gpgv --keyring "$C/gpg/public.gpg" "$f.asc" "$f" 2>/dev/null || echo "WARNING: uploaded gpg does not verify" >&2
row "gpg e2e, --whole-file (upload)" "256 MiB" "$whole ms" "${dgst[256M]} ms" "$(ratio "$whole" "${dgst[256M]}")" "openssl dgst -sha256; target <= 2.0"
row "  bytes received by the server per signing" "256 MiB" "$(( ${b1:-0} - ${b0:-0} )) B" "-" "-" "the file, plus the form"

# ---------------------------------------------------------------- server CPU per signing
say "server CPU per digest signing, 1 KiB and 1 GiB"
for s in 1K 1G; do
    f="$work/g$s.bin"; n=20
    c0=$(cpu_ticks)
    for ((k = 0; k < n; k++)); do rm -f "$f.asc"; st gpg "$f"; done
    c1=$(cpu_ticks)
    row "  server CPU per gpg digest signing" "$([ $s = 1K ] && echo "1 KiB" || echo "1 GiB")" \
        "$(awk -v t=$((c1 - c0)) -v n=$n -v hz=$hz 'BEGIN { printf "%.1f ms", t * 1000 / hz / n }')" "-" "-" "flat from 1 KiB to 1 GiB ($n signings; clock ticks of $((1000 / hz)) ms)"
done

# ---------------------------------------------------------------- authenticode
say "authenticode: a 200 MiB PE, digest signing vs local osslsigncode sign"
pe_size=$(stat -c %s "$work/in.exe")
pre="rm -f $work/ref.exe"
ref=$(median_ms $reps osslsigncode sign -certs "$C/authenticode/rsa-chain.pem" -key "$C/authenticode/rsa.key" \
    -readpass "$PASS" -h sha256 -in "$work/in.exe" -out "$work/ref.exe")
pre="cp $work/in.exe $work/pe.exe"
b0=$(received sha2signcode)
e2e=$(median_ms $reps st sha2signcode "$work/pe.exe")
b1=$(received sha2signcode)
pre=""
osslsigncode verify -CAfile "$C/authenticode/ca.pem" -in "$work/pe.exe" >"$work/verify.txt" 2>&1 || { echo "WARNING: digest-signed PE does not verify" >&2; cat "$work/verify.txt" >&2; }
row "authenticode e2e, digest signing (signtool)" "$((pe_size / 1048576)) MiB" "$e2e ms" "$ref ms" "$(ratio "$e2e" "$ref")" "local osslsigncode sign; target <= 1.2"
row "  bytes received by the server per signing" "$((pe_size / 1048576)) MiB" "$(( (${b1:-0} - ${b0:-0}) / reps )) B" "-" "-" "target < 65536"

# ---------------------------------------------------------------- mar
say "mar_sha384: a 200 MiB MAR, digest signing vs openssl dgst -sha384"
mar_size=$(stat -c %s "$work/in.mar")
hs=$(median_ms $reps openssl dgst -sha384 "$work/in.mar")
pre="cp $work/in.mar $work/m.mar"
b0=$(received mar_sha384)
e2e=$(median_ms $reps st mar_sha384 "$work/m.mar")
b1=$(received mar_sha384)
pre=""
grep -q "Verification OK" <<<"$("$MARTOOL" -v "$work/m.mar" -k "$C/mar/sha384-4096.pub.pem" 2>&1 || true)" || echo "WARNING: digest-signed MAR does not verify" >&2
row "mar_sha384 e2e, digest signing (signtool)" "$((mar_size / 1048576)) MiB" "$e2e ms" "$hs ms" "$(ratio "$e2e" "$hs")" "openssl dgst -sha384 (ours also writes the signed copy)"
row "  bytes received by the server per signing" "$((mar_size / 1048576)) MiB" "$(( (${b1:-0} - ${b0:-0}) / reps )) B" "-" "-" "target < 65536"
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

if [ $write = 1 ]; then
    {
        echo "<!-- BEGIN bench-digest.sh output -->"
        echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)),"
        echo "by \`$cmdline\` (median of $reps runs). Load average at the start: $load_start; at the end: $load_end."
        echo
        echo "| measurement | size | ours | reference | ratio | reference / target |"
        echo "|---|---|---|---|---|---|"
        printf '%s\n' "${rows[@]}"
        echo "<!-- END bench-digest.sh output -->"
    } >"$work/table.md"
    doc=docs/BENCHMARKS.md
    if grep -q "BEGIN bench-digest.sh output" "$doc"; then
        awk -v tbl="$work/table.md" '
            /BEGIN bench-digest.sh output/ { while ((getline l < tbl) > 0) print l; skip = 1; next }
            /END bench-digest.sh output/ { skip = 0; next }
            !skip { print }' "$doc" >"$work/doc.md" && cp "$work/doc.md" "$doc"
    else
        { echo; echo "## Digest signing (issue 16)"; echo; cat "$work/table.md"; } >>"$doc"
    fi
    say "table written to $doc"
fi
