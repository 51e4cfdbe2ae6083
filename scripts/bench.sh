#!/usr/bin/env bash
# Benchmark suite (issue 9): NOT part of the pass/fail tests.
#   ./scripts/bench.sh            100 KiB, 1, 10, 100 MiB and 1 GiB (gpg/hash/e2e/RSS), 5/3 repeats
#   ./scripts/bench.sh --quick    100 KiB and 100 MiB only, fewer repeats (a few minutes)
#   ./scripts/bench.sh --big      also 1 GiB for authenticode, apk and apple (slow on 2 cores)
#   --no-write                    print the table only; do not rewrite docs/BENCHMARKS.md
# Builds the release binaries and the `sign` example of the formats crate, makes the
# inputs with the real tools (mar -c, aapt + zipalign, mingw-w64, clang + ld64.lld), then
# measures, side by side on the same input and key:
#   1. local signing per format (ours = `sign` example, whole process including key unlock)
#      vs the reference tool (gpg, openssl dgst -sign for MAR, apksigner, osslsigncode, rcodesign);
#   2. the hashing limit (openssl dgst) vs our in-process signing time;
#   3. end to end (signtool -> signing-server over TLS on loopback) vs local signing;
#   4. signatures per second for many 100 KiB files (signtool --jobs);
#   5. peak RSS of signtool (/usr/bin/time -v) and of the server (VmHWM) per input size.
# Prints a table and writes it to docs/BENCHMARKS.md (between the BEGIN/END markers).
# The TEST keys of certs/ are used; references that cannot read encrypted keys get a
# decrypted copy in the private scratch directory, removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cmdline="./scripts/bench.sh $*"

quick=0 big=0 write=1
for a in "$@"; do
    case $a in
        --quick) quick=1 ;;
        --big) big=1 ;;
        --no-write) write=0 ;;
        *) echo "usage: $0 [--quick] [--big] [--no-write]" >&2; exit 2 ;;
    esac
done

source scripts/setup.sh
apt_install time

say "building release binaries (target dir: $CARGO_TARGET_DIR)"
cargo build --release --workspace --bins --locked -q
cargo build --release -p signing-formats --example sign --locked -q
rel="$CARGO_TARGET_DIR/release"
SIGN="$rel/examples/sign"
MARTOOL="$SIGNING_TEST_VENV/bin/mar"
RCODESIGN="${SIGNING_RCODESIGN:-}"
PASS="$repo/certs/PASSPHRASE"
C="$repo/certs"

if [ $quick = 1 ]; then
    sizes_scale="100K 100M"; sizes_fmt="100K 100M"; rep_small=3; rep_large=1; nsmall=200
else
    sizes_scale="100K 1M 10M 100M 1G"; sizes_fmt="100K 100M"; rep_small=5; rep_large=3; nsmall=500
fi
[ $big = 1 ] && sizes_fmt="$sizes_fmt 1G"

work=$(mktemp -d "${TMPDIR:-/tmp}/bench.XXXXXX")
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

bytes() { # 100K / 1M / 1G -> bytes
    local n=${1%[KMG]}
    case $1 in *K) echo $((n * 1024)) ;; *M) echo $((n * 1024 * 1024)) ;; *G) echo $((n * 1024 * 1024 * 1024)) ;; *) echo "$1" ;; esac
}
label() { case $1 in *K) echo "${1%K} KiB" ;; *M) echo "${1%M} MiB" ;; *G) echo "${1%G} GiB" ;; esac; }
reps() { [ "$(bytes "$1")" -ge $((50 * 1024 * 1024)) ] && echo $rep_large || echo $rep_small; }
now_ns() { date +%s%N; }

# median_ms N CMD...: runs CMD N times (each preceded by `pre`, if set), prints the median wall ms.
median_ms() {
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

# One random 1 GiB (or 100 MiB) source; inputs of each size are its prefixes.
max=100M
case " $sizes_scale $sizes_fmt " in *" 1G "*) max=1G ;; esac
say "making a $(label $max) random source"
{ openssl enc -aes-128-ctr -pass pass:bench -nosalt -pbkdf2 -in /dev/zero 2>/dev/null || true; } | head -c "$(bytes $max)" >"$work/random"
raw() { # SIZE -> path of a raw file of that size
    local f="$work/raw-$1"
    if [ ! -f "$f" ]; then
        if [ "$1" = "$max" ]; then ln "$work/random" "$f"; else head -c "$(bytes "$1")" "$work/random" >"$f"; fi
    fi
    echo "$f"
}

rows=()
row() { rows+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); printf '%-44s %-8s %12s %12s %7s  %s\n' "$1" "$2" "$3" "$4" "$5" "$6"; }
printf '%-44s %-8s %12s %12s %7s  %s\n' "measurement" "size" "ours" "reference" "ratio" "reference tool / target"

# ---------------------------------------------------------------- 1 + 2: local signing
sign_ms() { sed -n 's/.*sign_ms=\([0-9.]*\).*/\1/p' "$work/last.out"; }
declare -A hash_ms insign_ms local_ms

say "hashing limit: openssl dgst"
for s in $(printf '%s\n' $sizes_scale $sizes_fmt | awk '!seen[$0]++'); do
    f=$(raw "$s")
    for d in sha256 sha384 sha1; do
        t=$(median_ms "$(reps "$s")" openssl dgst -"$d" "$f")
        hash_ms[$d-$s]=$t
        row "hashing limit: openssl dgst -$d" "$(label "$s")" "-" "$t ms" "-" "one pass over the file"
    done
done

# gpg ----------------------------------------------------------------------------
say "gpg"
export GNUPGHOME="$work/gnupg"; mkdir -m 700 "$GNUPGHOME"
gpg --batch -q --pinentry-mode loopback --passphrase-file "$PASS" --import "$C/gpg/secret.asc" 2>/dev/null
fpr=$(cat "$C/gpg/FINGERPRINT")
for s in $sizes_scale; do
    f=$(raw "$s"); n=$(reps "$s")
    pre="rm -f $work/out.asc"
    ours=$(median_ms "$n" "$SIGN" gpg --key "$C/gpg/secret.asc" --passphrase-file "$PASS" "$f" "$work/out.asc")
    insign_ms[gpg-$s]=$(sign_ms); local_ms[gpg-$s]=$ours; pre="rm -f $work/ref.asc"
    gpgv --keyring "$C/gpg/public.gpg" "$work/out.asc" "$f" 2>/dev/null || echo "WARNING: our gpg signature does not verify" >&2
    ref=$(median_ms "$n" gpg --batch --yes -q --pinentry-mode loopback --passphrase-file "$PASS" -u "$fpr" \
        --digest-algo SHA256 --detach-sign --armor -o "$work/ref.asc" "$f")
    pre=""
    row "local sign gpg (Ed25519, SHA-256)" "$(label "$s")" "$ours ms" "$ref ms" "$(ratio "$ours" "$ref")" "gpg --detach-sign --armor; target < 1"
    row "  in-process gpg sign vs sha256 limit" "$(label "$s")" "${insign_ms[gpg-$s]} ms" "${hash_ms[sha256-$s]:-?} ms" \
        "$(ratio "${insign_ms[gpg-$s]}" "${hash_ms[sha256-$s]:-0}")" "openssl dgst -sha256; target <= 1.2 (large)"
done

# mar ----------------------------------------------------------------------------
say "mar (sha384, RSA-4096)"
for s in $sizes_fmt; do
    [ "$(bytes "$s")" -gt $((500 * 1024 * 1024)) ] && { row "local sign mar_sha384" "$(label "$s")" "-" "-" "-" "MAR caps inputs at 500 MiB"; continue; }
    mkdir -p "$work/mar-$s"; cp "$(raw "$s")" "$work/mar-$s/payload.bin"
    "$MARTOOL" -C "$work/mar-$s" -c "$work/in-$s.mar" payload.bin
    rm -rf "$work/mar-$s"
    f="$work/in-$s.mar"; n=$(reps "$s")
    pre="rm -f $work/out.mar"
    ours=$(median_ms "$n" "$SIGN" mar --key "$C/mar/sha384-4096.key" --digest sha384 --passphrase-file "$PASS" "$f" "$work/out.mar")
    insign_ms[mar-$s]=$(sign_ms); pre=""
    grep -q "Verification OK" <<<"$("$MARTOOL" -v "$work/out.mar" -k "$C/mar/sha384-4096.pub.pem" 2>&1 || true)" || echo "WARNING: our MAR does not verify" >&2
    ref=$(median_ms "$n" openssl dgst -sha384 -sign "$C/mar/sha384-4096.key" -passin "file:$PASS" -out "$work/ref.sig" "$f")
    hs=$(median_ms "$n" openssl dgst -sha384 "$f")
    row "local sign mar_sha384 (RSA-4096)" "$(label "$s")" "$ours ms" "$ref ms" "$(ratio "$ours" "$ref")" "openssl dgst -sha384 -sign (hash+RSA, no MAR rewrite)"
    row "  in-process mar sign vs sha384 limit" "$(label "$s")" "${insign_ms[mar-$s]} ms" "$hs ms" "$(ratio "${insign_ms[mar-$s]}" "$hs")" "openssl dgst -sha384; target <= 1.2 (large)"
    rm -f "$f" "$work/out.mar"
done

# apk ----------------------------------------------------------------------------
say "apk (RSA-3072, v1+v2+v3)"
openssl pkcs8 -topk8 -nocrypt -passin "file:$PASS" -in "$C/apk/rsa/key.pem" -outform DER -out "$work/apk.pk8"
for s in $sizes_fmt; do
    d="$work/apk-$s"; mkdir -p "$d/assets"
    cat >"$d/AndroidManifest.xml" <<'XML'
<?xml version="1.0" encoding="utf-8"?>
<manifest xmlns:android="http://schemas.android.com/apk/res/android" package="org.example.signing.bench" android:versionCode="1" android:versionName="1.0">
  <uses-sdk android:minSdkVersion="21" android:targetSdkVersion="33"/>
  <application android:label="bench"/>
</manifest>
XML
    cp "$(raw "$s")" "$d/assets/payload.dat"
    aapt package -f -M "$d/AndroidManifest.xml" -I /usr/share/android-framework-res/framework-res.apk \
        -A "$d/assets" -0 dat -F "$d/base.apk" >/dev/null
    zipalign -p -f 4 "$d/base.apk" "$work/in-$s.apk"
    rm -rf "$d"
    f="$work/in-$s.apk"; n=$(reps "$s")
    pre="rm -f $work/out.apk"
    ours=$(median_ms "$n" "$SIGN" apk --key "$C/apk/rsa/key.pem" --cert "$C/apk/rsa/cert.pem" --passphrase-file "$PASS" "$f" "$work/out.apk")
    ins=$(sign_ms); pre="rm -f $work/ref.apk"
    apksigner verify "$work/out.apk" >/dev/null 2>&1 || echo "WARNING: our APK does not verify" >&2
    ref=$(median_ms "$n" apksigner sign --key "$work/apk.pk8" --cert "$C/apk/rsa/cert.pem" --in "$f" --out "$work/ref.apk")
    pre=""
    row "local sign apk (RSA-3072, v1+v2+v3)" "$(label "$s")" "$ours ms" "$ref ms" "$(ratio "$ours" "$ref")" "apksigner sign"
    row "  in-process apk sign vs sha256 limit" "$(label "$s")" "$ins ms" "${hash_ms[sha256-$s]} ms" "$(ratio "$ins" "${hash_ms[sha256-$s]}")" "openssl dgst -sha256 (v1+v2+v3 read the entries more than once)"
    rm -f "$f" "$work/out.apk" "$work/ref.apk" "$work/ref.apk.idsig"
done

# authenticode -------------------------------------------------------------------
say "authenticode (RSA-3072, SHA-256)"
for s in $sizes_fmt; do
    cp "$(raw "$s")" "$work/blob.bin"
    cat >"$work/pe.c" <<'EOF'
#include <stdio.h>
extern const char blob[];
__asm__(".section .rdata,\"dr\"\n.globl blob\nblob:\n.incbin \"blob.bin\"\n.text\n");
int main(void) { printf("%d\n", blob[0]); return 0; }
EOF
    (cd "$work" && x86_64-w64-mingw32-gcc -O1 -o "in-$s.exe" pe.c)
    rm -f "$work/blob.bin"
    f="$work/in-$s.exe"; n=$(reps "$s")
    pre="rm -f $work/out.exe"
    ours=$(median_ms "$n" "$SIGN" authenticode --key "$C/authenticode/rsa.key" --cert "$C/authenticode/rsa-chain.pem" \
        --digest sha256 --passphrase-file "$PASS" "$f" "$work/out.exe")
    ins=$(sign_ms); pre="rm -f $work/ref.exe"
    osslsigncode verify -CAfile "$C/authenticode/ca.pem" -in "$work/out.exe" >/dev/null 2>&1 || echo "WARNING: our PE does not verify" >&2
    ref=$(median_ms "$n" osslsigncode sign -certs "$C/authenticode/rsa-chain.pem" -key "$C/authenticode/rsa.key" \
        -readpass "$PASS" -h sha256 -in "$f" -out "$work/ref.exe")
    pre=""
    row "local sign authenticode (RSA-3072)" "$(label "$s")" "$ours ms" "$ref ms" "$(ratio "$ours" "$ref")" "osslsigncode sign"
    row "  in-process authenticode vs sha256 limit" "$(label "$s")" "$ins ms" "${hash_ms[sha256-$s]} ms" "$(ratio "$ins" "${hash_ms[sha256-$s]}")" "openssl dgst -sha256; target <= 1.2 (large)"
    rm -f "$f" "$work/out.exe" "$work/ref.exe"
done

# apple --------------------------------------------------------------------------
say "apple (Mach-O x86_64, RSA-2048)"
if [ -n "$RCODESIGN" ] && [ -x "$RCODESIGN" ]; then
    openssl pkey -passin "file:$PASS" -in "$C/apple/developer-id.key" -out "$work/apple-plain.key"
    for s in $sizes_fmt; do
        cp "$(raw "$s")" "$work/blob.bin"
        cat >"$work/m.c" <<'EOF'
extern const char blob[];
__asm__(".section __DATA,__const\n.globl _blob\n_blob:\n.incbin \"blob.bin\"\n.text\n");
int main(void) {
  __asm__ volatile("mov $0x2000001, %eax\n xor %edi, %edi\n syscall");
  return blob[0];
}
EOF
        (cd "$work" && clang -target x86_64-apple-macos11 -fuse-ld=lld -nostdlib -O1 -Wl,-e,_main -o "in-$s.macho" m.c)
        rm -f "$work/blob.bin"
        f="$work/in-$s.macho"; n=$(reps "$s")
        pre="rm -f $work/out.macho"
        ours=$(median_ms "$n" "$SIGN" apple --key "$C/apple/developer-id.key" --cert "$C/apple/chain.pem" --passphrase-file "$PASS" "$f" "$work/out.macho")
        ins=$(sign_ms); pre="rm -f $work/ref.macho"
        ref=$(median_ms "$n" "$RCODESIGN" sign --timestamp-url none --pem-file "$work/apple-plain.key" --pem-file "$C/apple/developer-id.pem" "$f" "$work/ref.macho")
        pre=""
        grep -q "no problems detected" <<<"$("$RCODESIGN" verify "$work/out.macho" 2>&1 || true)" || echo "WARNING: rcodesign verify failed on our Mach-O" >&2
        row "local sign apple Mach-O (RSA-2048)" "$(label "$s")" "$ours ms" "$ref ms" "$(ratio "$ours" "$ref")" "rcodesign sign"
        row "  in-process apple sign vs sha256 limit" "$(label "$s")" "$ins ms" "${hash_ms[sha256-$s]} ms" "$(ratio "$ins" "${hash_ms[sha256-$s]}")" "openssl dgst -sha256 (page hashes + verify pass)"
        rm -f "$f" "$work/out.macho" "$work/ref.macho"
    done
else
    row "local sign apple" "-" "-" "-" "-" "skipped: no rcodesign (scripts/setup.sh builds it)"
fi

# ---------------------------------------------------------------- 3, 5, 6: end to end, RSS
start_server() { # FORMAT SECTIONS... ; sets server_pid, url
    local cfg="$work/signing.ini"
    cat >"$cfg" <<EOF
[server]
listen = 127.0.0.1
port = 0
tls_cert = $C/server-chain.pem
tls_key = $C/server.key
work_dir = $work/server
long_poll = 30
max_queue = 4096

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
audit_log = $work/audit.log

[format:gpg]
type = gpg
key = $C/gpg/secret.asc

[format:mar]
type = mar
key = $C/mar/sha1-2048.key
digest = sha1

[format:mar_sha384]
type = mar
key = $C/mar/sha384-4096.key
digest = sha384
EOF
    rm -f "$work/server.out"
    { cat "$PASS"; echo; cat "$PASS"; echo; cat "$PASS"; echo; } | "$rel/signing-server" "$cfg" >"$work/server.out" 2>"$work/server.log" &
    server_pid=$!
    for _ in $(seq 1 300); do
        grep -q "listening on" "$work/server.out" 2>/dev/null && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
        sleep 0.1
    done
    url=$(sed -n 's/^listening on https:\/\///p' "$work/server.out" | head -1)
    printf 'bench-minting-password\n' >"$work/mint-pw"
    "$rel/signtool" token -H "$url" -c "$C/ca.pem" -u bench --password-file "$work/mint-pw" -i 127.0.0.1 -d 3600 -o "$work/token" 2>/dev/null
}
stop_server() {
    kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=""
    rm -rf "$work/server"
}
server_hwm_kib() { sed -n 's/^VmHWM:\s*\([0-9]*\) kB/\1/p' "/proc/$server_pid/status"; }
st() { "$rel/signtool" sign -q -H "$1:$url" -c "$C/ca.pem" -t "$work/token" --no-shuffle "${@:2}"; }

say "end to end (signtool -> server over TLS on loopback) and peak RSS, gpg"
for s in $sizes_scale; do
    f=$(raw "$s")
    start_server
    # Wall time in ns around the run (GNU time's elapsed has 10 ms steps); its RSS figure is kept.
    s0=$(now_ns)
    /usr/bin/time -v -o "$work/time.txt" "$rel/signtool" sign -q -H "gpg:$url" -c "$C/ca.pem" -t "$work/token" \
        -f gpg -o "$work/e2e.asc" "$f" >/dev/null 2>"$work/st.err" || { cat "$work/st.err" >&2; }
    s1=$(now_ns)
    e2e=$(awk -v ns=$((s1 - s0)) 'BEGIN { printf "%.1f", ns / 1e6 }')
    st_rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time.txt")
    srv_rss=$(server_hwm_kib)
    gpgv --keyring "$C/gpg/public.gpg" "$work/e2e.asc" "$f" 2>/dev/null || echo "WARNING: e2e gpg signature does not verify" >&2
    stop_server
    loc=${insign_ms[gpg-$s]:-FAIL}
    row "e2e signtool->server gpg (vs in-process sign)" "$(label "$s")" "$e2e ms" "$loc ms" "$(ratio "$e2e" "$loc")" "target <= 2 (large)"
    row "  e2e vs the local \`sign\` process (key unlock included)" "$(label "$s")" "$e2e ms" "${local_ms[gpg-$s]:-?} ms" "$(ratio "$e2e" "${local_ms[gpg-$s]:-0}")" "what a user running a local signer waits"
    row "  peak RSS signtool / server" "$(label "$s")" "$((st_rss / 1024)) MiB" "$((srv_rss / 1024)) MiB" "-" "target <= 64 MiB each"
    rm -f "$work/e2e.asc"
done

# ---------------------------------------------------------------- 4: throughput
say "throughput: $nsmall files of 100 KiB, signtool --jobs"
start_server
mkdir -p "$work/many-gpg" "$work/many-mar"
for i in $(seq 1 "$nsmall"); do head -c 102400 "$work/random" >"$work/many-gpg/f$i.bin"; printf '%08d' "$i" | dd of="$work/many-gpg/f$i.bin" bs=1 seek=0 conv=notrunc status=none; done
mkdir -p "$work/mar-src"; head -c 102400 "$work/random" >"$work/mar-src/payload.bin"
"$MARTOOL" -C "$work/mar-src" -c "$work/base.mar" payload.bin
for i in $(seq 1 "$nsmall"); do cp "$work/base.mar" "$work/many-mar/f$i.mar"; printf '%08d' "$i" | dd of="$work/many-mar/f$i.mar" bs=1 seek=50000 conv=notrunc status=none; done
for jobs in 8 32; do
    for fmt in gpg mar mar_sha384; do
        src=$work/many-gpg; [ "$fmt" = gpg ] || src=$work/many-mar
        rm -rf "$work/out-$fmt"
        s0=$(now_ns)
        st "$fmt" -f "$fmt" --jobs "$jobs" -d "$work/out-$fmt" "$src" >/dev/null 2>"$work/st.err" || { cat "$work/st.err" >&2; }
        s1=$(now_ns)
        got=$(find "$work/out-$fmt" -type f -name "*.$([ "$fmt" = gpg ] && echo asc || echo mar)" | wc -l)
        rate=$(awk -v n="$got" -v ns=$((s1 - s0)) 'BEGIN { printf "%.0f", n / (ns / 1e9) }')
        case $fmt in
            gpg) what="gpg (Ed25519)" ;;
            mar) what="mar (SHA-1, RSA-2048)" ;;
            *) what="mar_sha384 (RSA-4096)" ;;
        esac
        row "throughput $what 100 KiB, signtool --jobs $jobs" "$got files" "$rate sig/s" "-" "-" "target >= 500/s"
        # the server keeps results by input hash: restart so the next run signs again
        stop_server; start_server
    done
done
grep -q "Verification OK" <<<"$("$MARTOOL" -v "$work/out-mar/f1.mar" -k "$C/mar/sha1-2048.pub.pem" 2>&1 || true)" || echo "WARNING: throughput MAR (sha1) does not verify" >&2
grep -q "Verification OK" <<<"$("$MARTOOL" -v "$work/out-mar_sha384/f1.mar" -k "$C/mar/sha384-4096.pub.pem" 2>&1 || true)" || echo "WARNING: throughput MAR (sha384) does not verify" >&2
gpgv --keyring "$C/gpg/public.gpg" "$work/out-gpg/f1.bin.asc" "$work/many-gpg/f1.bin" 2>/dev/null || echo "WARNING: throughput gpg does not verify" >&2
say "RSA private-key operations per second on one core (openssl speed): the bound of the mar rows"
speed=$(openssl speed -seconds 2 rsa2048 rsa4096 2>/dev/null | awk '/^rsa (2048|4096) bits/ {print $2, $6}')
while read -r bits rate; do
    row "  bound: openssl speed rsa$bits sign x $(nproc) cores" "-" "-" "$(awk -v r="$rate" -v n="$(nproc)" 'BEGIN { printf "%.0f sig/s", r * n }')" "-" "one RSA-$bits signature per file, nothing else"
done <<<"$speed"
stop_server

# ---------------------------------------------------------------- report
if [ $write = 1 ]; then
    {
        echo "<!-- BEGIN bench.sh output -->"
        echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)),"
        echo "SHA-NI: $(grep -qw sha_ni /proc/cpuinfo && echo yes || echo no), by \`$cmdline\` (median of $rep_small runs small / $rep_large large)."
        echo
        echo "| measurement | size | ours | reference | ratio | reference tool / target |"
        echo "|---|---|---|---|---|---|"
        printf '%s\n' "${rows[@]}"
        echo "<!-- END bench.sh output -->"
    } >"$work/table.md"
    doc=docs/BENCHMARKS.md
    if [ -f "$doc" ] && grep -q "BEGIN bench.sh output" "$doc"; then
        awk -v tbl="$work/table.md" '
            /BEGIN bench.sh output/ { while ((getline l < tbl) > 0) print l; skip = 1; next }
            /END bench.sh output/ { skip = 0; next }
            !skip { print }' "$doc" >"$work/doc.md" && cp "$work/doc.md" "$doc"
    else
        { echo "# Benchmarks"; echo; cat "$work/table.md"; } >"$doc"
    fi
    say "table written to $doc"
fi
