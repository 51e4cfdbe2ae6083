#!/usr/bin/env bash
# The main job, end to end, on the TEST keys of certs/:
#   1. starts signing-server on signing.ini.example, typing the key passphrase on stdin;
#   2. mints a token for this machine (POST /token), as the token-issuing host does;
#   3. signs a sample file in every format the server has, with a signtool client;
#   4. verifies each output with the tool users trust (gpgv, apksigner), then stops the server.
# ./scripts/demo.sh            (port 9110 as in signing.ini.example; DEMO_PORT=N to change)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

say "building"
cargo build --workspace --bins --locked -q
bin="$CARGO_TARGET_DIR/debug"

work=$(mktemp -d)
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

port="${DEMO_PORT:-9110}"
sed "s/^port = .*/port = $port/" signing.ini.example > "$work/signing.ini"
# Paths in the config are relative to its directory: point them back at the repo.
sed -i "s#= certs/#= $PWD/certs/#" "$work/signing.ini"

say "starting signing-server on https://127.0.0.1:$port (passphrase from certs/PASSPHRASE: TEST-ONLY)"
for _ in 1 2 3 4 5 6 7 8; do cat certs/PASSPHRASE; echo; done | "$bin/signing-server" "$work/signing.ini" >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 1 100); do
    grep -q "listening on" "$work/server.out" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
url="https://127.0.0.1:$port"
curl -sf --cacert certs/ca.pem "$url/health"; echo

say "minting a token for 127.0.0.1 (POST /token)"
curl -sf --cacert certs/ca.pem -u tokenhost:test-only-minting-password \
    -d slave_ip=127.0.0.1 -d duration=300 "$url/token" > "$work/token"

say "signing a sample file, format gpg, with Mozilla's signtool 4.x client"
head -c 1000000 /dev/urandom > "$work/sample.tar.gz"
"$SIGNING_TEST_VENV/bin/signtool" -H "gpg:127.0.0.1:$port" -c certs/ca.pem \
    -t "$work/token" -n "$work/nonce" -f gpg -o "$work/sample.tar.gz.asc" "$work/sample.tar.gz"

say "verifying with gpgv"
gpgv --keyring ./certs/gpg/public.gpg "$work/sample.tar.gz.asc" "$work/sample.tar.gz"

# --- apk ---
say "signing an APK (made with aapt + zipalign), format apk, with curl"
mkdir -p "$work/apk/assets"
cat > "$work/apk/AndroidManifest.xml" <<'XML'
<?xml version="1.0" encoding="utf-8"?>
<manifest xmlns:android="http://schemas.android.com/apk/res/android" package="org.example.signing.demo" android:versionCode="1" android:versionName="1.0">
  <uses-sdk android:minSdkVersion="21" android:targetSdkVersion="33"/>
  <application android:label="demo"/>
</manifest>
XML
seq 1 20000 > "$work/apk/assets/numbers.txt"
aapt package -f -M "$work/apk/AndroidManifest.xml" -I /usr/share/android-framework-res/framework-res.apk \
    -A "$work/apk/assets" -F "$work/demo-unaligned.apk"
zipalign -p -f 4 "$work/demo-unaligned.apk" "$work/demo.apk"
# Mozilla's signtool 4.x has no `apk` format: speak the protocol with curl.
apk_sha=$(sha256sum "$work/demo.apk" | cut -d' ' -f1)
curl -sf --cacert certs/ca.pem -F "token=<$work/token" -F nonce= -F filename=demo.apk \
    -F sha256="$apk_sha" -F "filedata=@$work/demo.apk" "$url/sign/apk" >/dev/null
for _ in $(seq 1 100); do
    code=$(curl -s --cacert certs/ca.pem -o "$work/demo-signed.apk" -w '%{http_code}' "$url/sign/apk/$apk_sha")
    [ "$code" = 200 ] && break
    [ "$code" = 404 ] || { echo "fetch failed: HTTP $code" >&2; exit 1; }
    sleep 0.1
done
say "verifying with apksigner"
apksigner verify --verbose --print-certs "$work/demo-signed.apk" | grep -E "^(Verifies|Verified using v[123])|certificate SHA-256"

say "audit log:"
cat /tmp/signing-server-example/audit.log | tail -n 1
say "demo OK: every format this server has (gpg, apk) signed and verified"
