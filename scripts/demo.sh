#!/usr/bin/env bash
# The main job, end to end, on the TEST keys of certs/:
#   1. starts signing-server on signing.ini.example, typing the key passphrase on stdin;
#   2. mints a token for this machine (POST /token), as the token-issuing host does;
#   3. signs a sample file in every format the server has, with a signtool client;
#   4. verifies each output with the tool users trust (gpgv), then stops the server.
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
# One line per encrypted key file (gpg, apple, …): repeat the test passphrase.
yes "$(cat certs/PASSPHRASE)" | "$bin/signing-server" "$work/signing.ini" >"$work/server.out" 2>"$work/server.log" &
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

say "audit log:"
cat /tmp/signing-server-example/audit.log | tail -n 1
say "demo OK: every format this server has (gpg) signed and verified"
