#!/usr/bin/env bash
# make-apk-keys.sh — (re)generate the TEST-ONLY APK signing keys in certs/apk/.
#
#   ./certs/make-apk-keys.sh           create only what is missing
#   ./certs/make-apk-keys.sh --force   regenerate everything
#
# For each of rsa (RSA 3072) and ec (EC P-256): key.pem (encrypted PKCS#8,
# test passphrase from certs/PASSPHRASE), cert.pem (self-signed: Android does
# not check a chain) and CERT_SHA256 (hex SHA-256 of the certificate's DER,
# what `apksigner verify --print-certs` prints). TESTS ONLY.
#
# Needs: bash, openssl (3.x).
set -euo pipefail

FORCE=0
case "${1:-}" in
    "") ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

CERTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$CERTS"
umask 022
say() { echo "make-apk-keys: $*"; }

make_apk_key() {
    local dir="apk/$1" subject="$2"; shift 2
    mkdir -p "$dir"
    if [ "$FORCE" = 1 ] || [ ! -s "$dir/key.pem" ]; then
        # The passphrase goes through a file descriptor, never argv.
        openssl genpkey "$@" -aes-256-cbc -pass file:PASSPHRASE -out "$dir/key.pem.tmp"
        mv "$dir/key.pem.tmp" "$dir/key.pem"
        rm -f "$dir/cert.pem" "$dir/CERT_SHA256"
        say "wrote $dir/key.pem"
    fi
    if [ ! -s "$dir/cert.pem" ]; then
        openssl req -new -x509 -key "$dir/key.pem" -passin file:PASSPHRASE -sha256 -days 9125 \
            -subj "$subject" -out "$dir/cert.pem"
        rm -f "$dir/CERT_SHA256"
        say "wrote $dir/cert.pem"
    fi
    if [ ! -s "$dir/CERT_SHA256" ]; then
        openssl x509 -in "$dir/cert.pem" -outform DER | openssl dgst -sha256 -r \
            | cut -d' ' -f1 | tr -d '\n' > "$dir/CERT_SHA256"
        say "wrote $dir/CERT_SHA256"
    fi
}

make_apk_key rsa "/CN=signing-server TEST APK key RSA (TEST ONLY, never trust)" \
    -algorithm RSA -pkeyopt rsa_keygen_bits:3072
make_apk_key ec "/CN=signing-server TEST APK key EC (TEST ONLY, never trust)" \
    -algorithm EC -pkeyopt ec_paramgen_curve:P-256
