#!/usr/bin/env bash
# make-test-pki.sh — (re)generate the TEST-ONLY keys and certificates in certs/.
#
#   ./certs/make-test-pki.sh           create only what is missing
#   ./certs/make-test-pki.sh --force   regenerate everything
#
# EVERYTHING THIS SCRIPT MAKES IS FOR TESTS ONLY. The private keys and the
# passphrase are committed to a public repository: never use them, or
# anything signed by them, in production.
#
# Needs: bash, openssl (3.x), gpg + gpg-agent (2.2+).
set -euo pipefail

FORCE=0
case "${1:-}" in
    "") ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

CERTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$CERTS"

PASSPHRASE_VALUE='signing-test-passphrase'
umask 022

TMP="$(mktemp -d)"
cleanup() {
    # Stop the agent of our private GNUPGHOME, then remove everything.
    if [ -d "$TMP/gnupg" ]; then
        gpgconf --homedir "$TMP/gnupg" --kill all >/dev/null 2>&1 || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

need() { [ "$FORCE" = 1 ] || [ ! -s "$1" ]; }
say() { echo "make-test-pki: $*"; }

# --- the shared test passphrase -------------------------------------------
if need PASSPHRASE || [ "$(cat PASSPHRASE)" != "$PASSPHRASE_VALUE" ]; then
    printf '%s' "$PASSPHRASE_VALUE" > PASSPHRASE
    say "wrote PASSPHRASE"
fi

# --- X.509: test CA + TLS server certificate --------------------------------
cat > "$TMP/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
O = signing-server TEST ONLY
CN = signing-server TEST CA (never for production)
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF

cat > "$TMP/server.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
O = signing-server TEST ONLY
CN = localhost
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:127.0.0.2, IP:127.0.0.3, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF

regen_server=0
if need ca.pem || need ca.key; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key.tmp
    openssl req -x509 -new -config "$TMP/ca.cnf" -key ca.key.tmp -sha256 -days 7300 \
        -set_serial "0x$(openssl rand -hex 16)" -out ca.pem.tmp
    mv ca.key.tmp ca.key
    mv ca.pem.tmp ca.pem
    say "wrote ca.pem ca.key (new CA: the server certificate is reissued too)"
    regen_server=1
fi

if [ "$regen_server" = 1 ] || need server.pem || need server.key; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key.tmp
    openssl req -new -config "$TMP/server.cnf" -key server.key.tmp -sha256 -out "$TMP/server.csr"
    openssl x509 -req -in "$TMP/server.csr" -CA ca.pem -CAkey ca.key -sha256 -days 3650 \
        -set_serial "0x$(openssl rand -hex 16)" \
        -extfile "$TMP/server.cnf" -extensions v3_server -out server.pem.tmp
    mv server.key.tmp server.key
    mv server.pem.tmp server.pem
    say "wrote server.pem server.key"
    regen_server=1
fi

if [ "$regen_server" = 1 ] || need server-chain.pem; then
    cat server.pem ca.pem > server-chain.pem
    say "wrote server-chain.pem"
fi

openssl verify -CAfile ca.pem server.pem >/dev/null

# --- OpenPGP signing keys -----------------------------------------------------
# make_gpg DIR ALGO: DIR/secret.asc (passphrase-protected, armoured),
# DIR/public.asc, DIR/public.gpg (binary keyring for gpgv) and DIR/FINGERPRINT.
make_gpg() {
    local dir="$1" algo="$2"
    local home="$TMP/gnupg"
    rm -rf "$home"
    mkdir -m 700 "$home"
    local gpg=(gpg --homedir "$home" --batch --quiet --no-tty --pinentry-mode loopback
               --passphrase-file "$CERTS/PASSPHRASE")
    mkdir -p "$dir"

    if [ "$FORCE" = 1 ] || [ ! -s "$dir/secret.asc" ]; then
        "${gpg[@]}" --quick-gen-key \
            "signing-server TEST key $algo (TEST ONLY, never trust) <signing-test@example.invalid>" \
            "$algo" sign never
        "${gpg[@]}" --armor --export-secret-keys > "$dir/secret.asc.tmp"
        mv "$dir/secret.asc.tmp" "$dir/secret.asc"
        rm -f "$dir/public.asc" "$dir/public.gpg" "$dir/FINGERPRINT"
        say "wrote $dir/secret.asc"
    else
        "${gpg[@]}" --import "$dir/secret.asc" 2>/dev/null
    fi

    if [ ! -s "$dir/public.asc" ]; then
        "${gpg[@]}" --armor --export > "$dir/public.asc"
        say "wrote $dir/public.asc"
    fi
    if [ ! -s "$dir/public.gpg" ]; then
        "${gpg[@]}" --export > "$dir/public.gpg"
        say "wrote $dir/public.gpg"
    fi
    if [ ! -s "$dir/FINGERPRINT" ]; then
        "${gpg[@]}" --with-colons --fingerprint --list-keys \
            | awk -F: '$1 == "fpr" { print $10; exit }' | tr -d '\n' > "$dir/FINGERPRINT"
        say "wrote $dir/FINGERPRINT"
    fi
    gpgconf --homedir "$home" --kill all >/dev/null 2>&1 || true
    rm -rf "$home"
}

# ed25519: the fastest to sign with in rpgp (microseconds); gpgv 2.2 verifies it.
make_gpg gpg ed25519
# RSA-4096: slower, but what many relying parties still expect.
make_gpg gpg-rsa rsa4096

"$CERTS/make-mar-keys.sh" $([ "$FORCE" = 1 ] && echo --force)
"$CERTS/make-apk-keys.sh" $([ "$FORCE" = 1 ] && echo --force)
"$CERTS/make-authenticode-keys.sh" $([ "$FORCE" = 1 ] && echo --force)
say "done (everything in $CERTS is TEST-ONLY)"
"$CERTS/make-apple-keys.sh" $([ "$FORCE" = 1 ] && echo --force)
