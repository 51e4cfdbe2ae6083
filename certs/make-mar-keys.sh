#!/usr/bin/env bash
# make-mar-keys.sh — (re)generate the TEST-ONLY MAR signing keys in certs/mar/.
#
#   ./certs/make-mar-keys.sh           create only what is missing
#   ./certs/make-mar-keys.sh --force   regenerate everything
#
# EVERYTHING THIS SCRIPT MAKES IS FOR TESTS ONLY: the private keys and their
# passphrase (certs/PASSPHRASE) are public.
#
# Makes, for the two MAR signature algorithms:
#   mar/sha1-2048.key     RSA-2048, encrypted PKCS#8 PEM (algorithm id 1, SHA-1)
#   mar/sha384-4096.key   RSA-4096, encrypted PKCS#8 PEM (algorithm id 2, SHA-384)
#   mar/*.pub.pem         their public keys (SubjectPublicKeyInfo PEM), for `mar -v F -k KEY`
#
# Needs: bash, openssl (3.x).
set -euo pipefail

FORCE=0
case "${1:-}" in
    "") ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

CERTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$CERTS"
umask 022
say() { echo "make-mar-keys: $*"; }
[ -s PASSPHRASE ] || { echo "make-mar-keys: certs/PASSPHRASE missing (run make-test-pki.sh)" >&2; exit 1; }

mkdir -p mar
make_key() {
    local name="$1" bits="$2"
    if [ "$FORCE" = 1 ] || [ ! -s "mar/$name.key" ]; then
        # The passphrase is read from the file, never put on the command line.
        openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:$bits" \
            -aes-256-cbc -pass file:PASSPHRASE -out "mar/$name.key.tmp" 2>/dev/null
        mv "mar/$name.key.tmp" "mar/$name.key"
        rm -f "mar/$name.pub.pem"
        say "wrote mar/$name.key"
    fi
    if [ ! -s "mar/$name.pub.pem" ]; then
        openssl pkey -in "mar/$name.key" -passin file:PASSPHRASE -pubout -out "mar/$name.pub.pem"
        say "wrote mar/$name.pub.pem"
    fi
}

make_key sha1-2048 2048
make_key sha384-4096 4096
