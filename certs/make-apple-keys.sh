#!/usr/bin/env bash
# make-apple-keys.sh — (re)generate the TEST-ONLY Apple code-signing PKI in certs/apple/.
#
#   ./certs/make-apple-keys.sh           create only what is missing
#   ./certs/make-apple-keys.sh --force   regenerate everything
#
# Makes a "Developer ID"-like chain: a test root CA (apple/ca.pem, ca.key),
# a leaf (apple/developer-id.pem) with extendedKeyUsage codeSigning and the
# Apple "Developer ID Application" marker extension, its RSA-2048 key as
# encrypted PKCS#8 PEM (apple/developer-id.key, passphrase = certs/PASSPHRASE),
# and apple/chain.pem (leaf then CA) for the `cert` setting.
# A second, unrelated leaf (apple/other.pem/.key, same passphrase) lets tests
# prove a wrong certificate is refused; apple/tsa.pem/.key is a test RFC 3161
# time-stamping authority (key unencrypted) for the tests' local responder.
#
# EVERYTHING THIS SCRIPT MAKES IS FOR TESTS ONLY: never trust it.
# Needs: bash, openssl (3.x).
set -euo pipefail

FORCE=0
case "${1:-}" in
    "") ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

CERTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$CERTS/apple"
cd "$CERTS/apple"
umask 022

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

need() { [ "$FORCE" = 1 ] || [ ! -s "$1" ]; }
say() { echo "make-apple-keys: $*"; }

cat > "$TMP/ca.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
O = signing-server TEST ONLY
OU = TEST Apple Certification Authority
CN = signing-server TEST Apple Root CA (never for production)
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF

# 1.2.840.113635.100.6.1.13: Apple's "Developer ID Application" leaf marker.
cat > "$TMP/leaf.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
UID = TESTTEAM01
CN = Developer ID Application: signing-server TEST ONLY (TESTTEAM01)
OU = TESTTEAM01
O = signing-server TEST ONLY
C = US
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
1.2.840.113635.100.6.1.13 = ASN1:NULL
CNF

regen=0
if need ca.pem || need ca.key; then
    openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out ca.key.tmp
    openssl req -x509 -new -config "$TMP/ca.cnf" -key ca.key.tmp -sha256 -days 7300 \
        -set_serial "0x$(openssl rand -hex 16)" -out ca.pem.tmp
    mv ca.key.tmp ca.key
    mv ca.pem.tmp ca.pem
    say "wrote apple/ca.pem apple/ca.key"
    regen=1
fi

# make_leaf NAME: NAME.key (encrypted PKCS#8 PEM, AES-256-CBC/PBKDF2) + NAME.pem.
make_leaf() {
    local name="$1"
    if [ "$regen" = 1 ] || need "$name.pem" || need "$name.key"; then
        openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/$name.plain"
        openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256 -in "$TMP/$name.plain" \
            -passout "file:$CERTS/PASSPHRASE" -out "$name.key.tmp"
        openssl req -new -config "$TMP/leaf.cnf" -key "$TMP/$name.plain" -sha256 -out "$TMP/$name.csr"
        openssl x509 -req -in "$TMP/$name.csr" -CA ca.pem -CAkey ca.key -sha256 -days 3650 \
            -set_serial "0x$(openssl rand -hex 16)" \
            -extfile "$TMP/leaf.cnf" -extensions v3_leaf -out "$name.pem.tmp"
        mv "$name.key.tmp" "$name.key"
        mv "$name.pem.tmp" "$name.pem"
        say "wrote apple/$name.pem apple/$name.key"
        regen=1
    fi
}
make_leaf developer-id
make_leaf other

# A test time-stamping authority (for the RFC 3161 tests; key unencrypted, tests only).
cat > "$TMP/tsa.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
O = signing-server TEST ONLY
CN = signing-server TEST TSA (never for production)
[v3_tsa]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
if [ "$regen" = 1 ] || need tsa.pem || need tsa.key; then
    openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out tsa.key.tmp
    openssl req -new -config "$TMP/tsa.cnf" -key tsa.key.tmp -sha256 -out "$TMP/tsa.csr"
    openssl x509 -req -in "$TMP/tsa.csr" -CA ca.pem -CAkey ca.key -sha256 -days 3650 \
        -set_serial "0x$(openssl rand -hex 16)" \
        -extfile "$TMP/tsa.cnf" -extensions v3_tsa -out tsa.pem.tmp
    mv tsa.key.tmp tsa.key
    mv tsa.pem.tmp tsa.pem
    say "wrote apple/tsa.pem apple/tsa.key"
fi

if [ "$regen" = 1 ] || need chain.pem; then
    cat developer-id.pem ca.pem > chain.pem
    say "wrote apple/chain.pem"
fi

openssl verify -CAfile ca.pem -purpose any developer-id.pem >/dev/null
say "done (everything in $CERTS/apple is TEST-ONLY)"
