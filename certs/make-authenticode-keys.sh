#!/usr/bin/env bash
# make-authenticode-keys.sh — (re)generate the TEST-ONLY Authenticode keys in
# certs/authenticode/.
#
#   ./certs/make-authenticode-keys.sh           create only what is missing
#   ./certs/make-authenticode-keys.sh --force   regenerate everything
#
# EVERYTHING THIS SCRIPT MAKES IS FOR TESTS ONLY: the keys and the passphrase
# are public. Never sign anything real with them.
#
# Makes: a code-signing CA (ca.pem/ca.key), leaf certificates with
# extendedKeyUsage codeSigning for an RSA-3072 and an EC P-256 key (leaf keys in
# encrypted PKCS#8 PEM with the test passphrase, chains leaf+CA), a P-384 leaf,
# and a time-stamping authority (tsa.pem, tsa.key unencrypted: the tests run
# `openssl ts -reply` with it; tsa-chain.pem = tsa.pem + ca.pem).
# Needs: bash, openssl (3.x).
set -euo pipefail

FORCE=0
case "${1:-}" in
    "") ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

CERTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$CERTS/authenticode"
cd "$CERTS/authenticode"
umask 022
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

need() { [ "$FORCE" = 1 ] || [ ! -s "$1" ]; }
say() { echo "make-authenticode-keys: $*"; }

cat > "$TMP/x.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
O = signing-server TEST ONLY
CN = signing-server TEST Authenticode CA (never for production)
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[v3_tsa]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF

new_ca=0
if need ca.pem || need ca.key; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out ca.key.tmp 2>/dev/null
    openssl req -x509 -new -config "$TMP/x.cnf" -extensions v3_ca -key ca.key.tmp -sha256 \
        -days 7300 -set_serial "0x$(openssl rand -hex 16)" -out ca.pem.tmp
    mv ca.key.tmp ca.key
    mv ca.pem.tmp ca.pem
    say "wrote ca.pem ca.key (new CA: every leaf is reissued)"
    new_ca=1
fi

# leaf NAME CN EXT KEYGEN-ARGS... : NAME.key (encrypted PKCS#8 unless tsa),
# NAME.pem, NAME-chain.pem.
leaf() {
    local name="$1" cn="$2" ext="$3"
    shift 3
    if [ "$new_ca" = 1 ] || need "$name.pem" || need "$name.key"; then
        openssl genpkey "$@" -out "$TMP/$name.key" 2>/dev/null
        openssl req -new -key "$TMP/$name.key" -subj "/O=signing-server TEST ONLY/CN=$cn" \
            -out "$TMP/$name.csr"
        openssl x509 -req -in "$TMP/$name.csr" -CA ca.pem -CAkey ca.key -sha256 -days 3650 \
            -set_serial "0x$(openssl rand -hex 16)" -extfile "$TMP/x.cnf" -extensions "$ext" \
            -out "$name.pem.tmp" 2>/dev/null
        if [ "$ext" = v3_tsa ]; then
            cp "$TMP/$name.key" "$name.key.tmp"
        else
            openssl pkcs8 -topk8 -v2 aes-256-cbc -in "$TMP/$name.key" \
                -passout "file:$CERTS/PASSPHRASE" -out "$name.key.tmp"
        fi
        mv "$name.key.tmp" "$name.key"
        mv "$name.pem.tmp" "$name.pem"
        cat "$name.pem" ca.pem > "$name-chain.pem"
        say "wrote $name.key $name.pem $name-chain.pem"
    fi
    openssl verify -CAfile ca.pem "$name.pem" >/dev/null
}

leaf rsa "signing-server TEST code signing RSA (never trust)" v3_leaf \
    -algorithm RSA -pkeyopt rsa_keygen_bits:3072
leaf ec "signing-server TEST code signing P-256 (never trust)" v3_leaf \
    -algorithm EC -pkeyopt ec_paramgen_curve:P-256
leaf ec384 "signing-server TEST code signing P-384 (never trust)" v3_leaf \
    -algorithm EC -pkeyopt ec_paramgen_curve:P-384
leaf tsa "signing-server TEST time-stamping authority (never trust)" v3_tsa \
    -algorithm EC -pkeyopt ec_paramgen_curve:P-256

say "done (everything in $CERTS/authenticode is TEST-ONLY)"
