#!/usr/bin/env bash
# Installs what the demo and the tests need, when it is missing:
#   - Debian packages: gpg/gpgv (verifier), curl, openssl, python3-venv;
#   - a Python venv with Mozilla's signtool 4.x (the legacy client we stay compatible with).
# Sourced by scripts/test.sh and scripts/demo.sh; safe to run again (it only adds what is missing).
set -euo pipefail

: "${SIGNING_CACHE:=$HOME/.cache/signing-server}"
# A target dir outside the clone, so a fresh clone (CI) builds incrementally.
: "${CARGO_TARGET_DIR:=$HOME/.cache/signing-target}"
: "${SIGNING_TEST_VENV:=$SIGNING_CACHE/venv}"
export SIGNING_CACHE CARGO_TARGET_DIR SIGNING_TEST_VENV

say() { printf '==> %s\n' "$*" >&2; }

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

apt_install ca-certificates gnupg gpgv curl openssl python3 python3-venv python3-pip
# oathtool: the TOTP codes of the second-factor tests (tests/tests/second_factor.rs,
# approval.rs) come from it, never from the server's own code.
apt_install oathtool

if ! command -v cargo >/dev/null 2>&1; then
    say "no cargo found: installing Debian's Rust toolchain (rustup's is preferred; needs Rust >= 1.88)"
    apt_install cargo rustc
fi

# --- mar ---
# libssl-dev + pkg-config: the openssl crate (MAR signer) builds against the system OpenSSL.
apt_install libssl-dev pkg-config
# Mozilla's `mar` tool (PyPI `mar` 3.x): makes MAR fixtures and verifies signatures in tests.
# "pip requirement:file it installs" pairs, installed below even into an existing venv.
VENV_PIP_EXTRA+=("mar>=3,<4:bin/mar")
# --- apk ---
# Build: the openssl crate links the system libssl. Tests: aapt + zipalign make
# fixture APKs (android-framework-res gives aapt its -I framework-res.apk),
# apksigner verifies what we sign.
apt_install pkg-config libssl-dev
apt_install aapt zipalign android-framework-res apksigner
# --- authenticode ---
# libssl-dev + pkg-config: rust-openssl (raw RSA/ECDSA signatures, encrypted PKCS#8 keys);
# osslsigncode: the verifier in the tests; mingw-w64: the tests compile their PE fixtures.
apt_install libssl-dev pkg-config osslsigncode gcc-mingw-w64-x86-64-win32 gcc-mingw-w64-i686-win32
# Beyond PE: wixl builds the tests' MSI packages (msitools' msiinfo reads them back),
# gcab their cabinets.
apt_install wixl msitools gcab
# --- apple ---
# clang + lld (ld64.lld) + llvm (llvm-lipo) build the Darwin Mach-O test inputs without an SDK;
# libssl-dev + pkg-config for the `openssl` crate (decrypts the Apple signing key in-process).
apt_install clang lld llvm libssl-dev pkg-config
# --- keys in hardware (PKCS#11) ---
# SoftHSM2 is the token of the tests (each test points SOFTHSM2_CONF at its own temporary
# token directory); opensc gives pkcs11-tool to generate keys on it.
apt_install softhsm2 opensc
# --- Linux distributions (rpm, apt InRelease) ---
# rpm: rpmbuild makes the tests' packages, rpmkeys checks our signatures; apt-utils:
# apt-ftparchive makes the tests' apt repository (dpkg-deb and apt-get are always there).
apt_install rpm apt-utils
# --- transparency log (issue 27) ---
# Go's own golang.org/x/mod/sumdb/{note,tlog} check our log in tests/tests/tlog.rs (built
# offline in GOPATH mode from the Debian package's sources; the server never runs Go).
apt_install golang-go golang-golang-x-mod-dev
# rcodesign (apple-codesign's CLI), for the tests' cross-check only: built once into the cache
# (`cargo install`, no notarization features: several minutes on 2 cores). The server never runs it.
: "${SIGNING_RCODESIGN_ROOT:=$SIGNING_CACHE/rcodesign}"
export SIGNING_RCODESIGN="${SIGNING_RCODESIGN:-$SIGNING_RCODESIGN_ROOT/bin/rcodesign}"
if [ ! -x "$SIGNING_RCODESIGN_ROOT/bin/rcodesign" ] && command -v cargo >/dev/null 2>&1; then
    say "building rcodesign into $SIGNING_RCODESIGN_ROOT (test cross-check; takes several minutes)"
    cargo install -q apple-codesign --version 0.29.0 --no-default-features --locked \
        --root "$SIGNING_RCODESIGN_ROOT" --target-dir "$SIGNING_CACHE/rcodesign-target" \
        || say "could not build rcodesign: the Apple tests (tests/tests/apple.rs) need it"
fi

if [ ! -x "$SIGNING_TEST_VENV/bin/signtool" ]; then
    say "creating the Python venv $SIGNING_TEST_VENV (Mozilla's signtool 4.x)"
    python3 -m venv "$SIGNING_TEST_VENV"
    "$SIGNING_TEST_VENV/bin/pip" install -q --disable-pip-version-check 'signtool>=4,<5'
fi
for spec in ${VENV_PIP_EXTRA[@]+"${VENV_PIP_EXTRA[@]}"}; do
    if [ ! -e "$SIGNING_TEST_VENV/${spec##*:}" ]; then
        say "installing ${spec%:*} into the venv"
        "$SIGNING_TEST_VENV/bin/pip" install -q --disable-pip-version-check "${spec%:*}"
    fi
done
