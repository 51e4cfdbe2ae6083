#!/usr/bin/env bash
# Keys in a PKCS#11 token against key files (issue 15): signatures per second per
# format with the same key, once as a passphrase-protected PEM file and once
# imported into a SoftHSM2 token. NOT part of the pass/fail tests.
#   ./scripts/bench-keys.sh             200 signings per key, figures written to docs/BENCHMARKS.md
#   ./scripts/bench-keys.sh --no-write  print only
# Each figure is in-process (the `sign` example of the formats crate opens the signer
# exactly as the server does: a pkcs11: URI with the PIN, or the file with its
# passphrase) over a small input, so the key operation dominates: the median time of
# N signings gives signatures per second for one signing thread. Every output is
# checked by the format's own verifier (mar -v, apksigner, osslsigncode).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
write=1 n=200
for a in "$@"; do
    case $a in
        --no-write) write=0 ;;
        *) echo "usage: $0 [--no-write]" >&2; exit 2 ;;
    esac
done

source scripts/setup.sh

say "building the sign example (release, target dir: $CARGO_TARGET_DIR)"
cargo build --release -p signing-formats --example sign --locked -q
SIGN="$CARGO_TARGET_DIR/release/examples/sign"
MARTOOL="$SIGNING_TEST_VENV/bin/mar"
PASS="$repo/certs/PASSPHRASE"
C="$repo/certs"
MODULE=/usr/lib/softhsm/libsofthsm2.so

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-keys.XXXXXX")
trap 'rm -rf "$work"' EXIT

# A private SoftHSM2 store; the TEST keys imported (decrypted copies only here).
export SOFTHSM2_CONF="$work/softhsm2.conf"
mkdir "$work/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$work/tokens" >"$SOFTHSM2_CONF"
softhsm2-util --init-token --free --label bench --so-pin 5678 --pin 1234 >/dev/null
printf '1234\n' >"$work/pin"
import() { # KEY LABEL ID
    openssl pkcs8 -topk8 -nocrypt -passin "file:$PASS" -in "$1" -out "$work/$2.pem"
    softhsm2-util --import "$work/$2.pem" --token bench --label "$2" --id "$3" --pin 1234 >/dev/null
    rm -f "$work/$2.pem"
}
uri() { echo "pkcs11:token=bench;object=$1?module-path=$MODULE"; }

sign_ms() { sed -n 's/.*sign_ms=\([0-9.]*\).*/\1/p' "$1"; }
per_s() { awk -v ms="$1" 'BEGIN { if (ms + 0 == 0) print "-"; else printf "%.0f", 1000 / ms }'; }
rows=()
row() {
    rows+=("| $1 | $2 | $3 ms | $4/s | $5 ms | $6/s | $7 |")
    printf '%-34s %-10s file %8s ms %6s/s   token %8s ms %6s/s   %s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7"
}

# measure NAME TYPE INPUT OUT VERIFY-CMD KEYFILE TOKEN-LABEL [sign options...]
measure() {
    local name=$1 type=$2 in=$3 out=$4 verify=$5 keyfile=$6 label=$7
    shift 7
    "$SIGN" "$type" --key "$keyfile" --passphrase-file "$PASS" --repeat "$n" "$@" "$in" "$out" >"$work/file.out"
    eval "$verify" || echo "WARNING: $name (file key) does not verify" >&2
    rm -f "$out"
    "$SIGN" "$type" --key "$(uri "$label")" --passphrase-file "$work/pin" --repeat "$n" "$@" "$in" "$out" >"$work/token.out"
    eval "$verify" || echo "WARNING: $name (token key) does not verify" >&2
    rm -f "$out"
    local f t
    f=$(sign_ms "$work/file.out"); t=$(sign_ms "$work/token.out")
    row "$name" "$(stat -c %s "$in") B" "$f" "$(per_s "$f")" "$t" "$(per_s "$t")" \
        "$(awk -v a="$t" -v b="$f" 'BEGIN { printf "%.2f", a / b }')"
}

head -c 10240 /dev/urandom >"$work/payload.bin"

say "mar_sha384 (RSA-4096)"
import "$C/mar/sha384-4096.key" mar 01
"$MARTOOL" -C "$work" -V 1.0 -H bench -c "$work/in.mar" payload.bin
measure "mar_sha384 (RSA-4096)" mar "$work/in.mar" "$work/out.mar" \
    'grep -q "Verification OK" <<<"$("$MARTOOL" -v "$work/out.mar" -k "$C/mar/sha384-4096.pub.pem" 2>&1)"' \
    "$C/mar/sha384-4096.key" mar --digest sha384

say "authenticode (RSA-3072 and ECDSA P-256, SHA-256)"
import "$C/authenticode/rsa.key" ac-rsa 02
import "$C/authenticode/ec.key" ac-ec 03
cat >"$work/pe.c" <<'EOF'
#include <stdio.h>
int main(void) { puts("bench"); return 0; }
EOF
x86_64-w64-mingw32-gcc -O1 -o "$work/in.exe" "$work/pe.c"
for kind in rsa ec; do
    measure "authenticode ($kind)" authenticode "$work/in.exe" "$work/out.exe" \
        'osslsigncode verify -CAfile "$C/authenticode/ca.pem" -in "$work/out.exe" >/dev/null 2>&1' \
        "$C/authenticode/$kind.key" "ac-$kind" --cert "$C/authenticode/$kind-chain.pem"
done

say "apk (RSA-3072, v1+v2+v3)"
import "$C/apk/rsa/key.pem" apk 04
mkdir -p "$work/apk/assets"
cat >"$work/apk/AndroidManifest.xml" <<'XML'
<?xml version="1.0" encoding="utf-8"?>
<manifest xmlns:android="http://schemas.android.com/apk/res/android" package="org.example.signing.bench" android:versionCode="1" android:versionName="1.0">
  <uses-sdk android:minSdkVersion="24" android:targetSdkVersion="33"/>
  <application android:label="bench"/>
</manifest>
XML
cp "$work/payload.bin" "$work/apk/assets/"
aapt package -f -M "$work/apk/AndroidManifest.xml" -I /usr/share/android-framework-res/framework-res.apk \
    -A "$work/apk/assets" -F "$work/base.apk" >/dev/null
zipalign -p -f 4 "$work/base.apk" "$work/in.apk"
measure "apk (RSA-3072, v1+v2+v3)" apk "$work/in.apk" "$work/out.apk" \
    'apksigner verify "$work/out.apk" >/dev/null 2>&1' \
    "$C/apk/rsa/key.pem" apk --cert "$C/apk/rsa/cert.pem"

load=$(cut -d' ' -f1-3 /proc/loadavg)
if [ $write = 1 ]; then
    {
        echo "<!-- BEGIN bench-keys -->"
        echo "Run: \`./scripts/bench-keys.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores, load average $load, SoftHSM2 $(softhsm2-util --version). Median of $n in-process signings of one ~10 KiB input per key, one thread; each output verified by its tool."
        echo
        echo "| format (key) | input | file key: median | file key: signatures/s | token key: median | token key: signatures/s | token / file |"
        echo "|---|---|---|---|---|---|---|"
        printf '%s\n' "${rows[@]}"
        echo "<!-- END bench-keys -->"
    } >"$work/table.md"
    python3 - "$repo/docs/BENCHMARKS.md" "$work/table.md" <<'PY'
import re, sys
doc, table = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
text = open(doc).read()
pat = re.compile(r"<!-- BEGIN bench-keys -->.*?<!-- END bench-keys -->", re.S)
if pat.search(text):
    text = pat.sub(lambda _: table, text)
else:
    text = text.rstrip("\n") + "\n\n## Keys in a PKCS#11 token against key files\n\n" + table + "\n"
open(doc, "w").write(text)
PY
    say "written to docs/BENCHMARKS.md"
fi
