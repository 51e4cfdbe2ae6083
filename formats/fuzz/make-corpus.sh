#!/usr/bin/env bash
# Regenerates the small seed inputs in formats/fuzz/seeds/<target>/ (committed;
# a few KB each) with the real tools: `mar -c` (the test venv), mingw-w64,
# osslsigncode, wixl (msitools), gcab, aapt + zipalign, tar/gzip, python3, gpg, clang + ld64.lld +
# llvm-lipo. Test keys only (certs/). Regression inputs (a crash the fuzzer
# found, e.g. seeds/config/level-non-ascii.ini) are written here too, so a
# regeneration keeps them.
# Usage: formats/fuzz/make-corpus.sh   (scripts/setup.sh installs the tools)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seeds=$here/seeds
: "${SIGNING_TEST_VENV:=$HOME/.cache/signing-server/venv}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for t in mar_parse apk_zip apk_manifest pe_authenticode authenticode_pkcs7 msi_cfb cab_parse cat_parse script_scan appx_zip apple_tarball apple_macho gpg_key token config rpm_headers; do
    rm -rf "${seeds:?}/$t"
    mkdir -p "$seeds/$t"
done

# --- MAR: plain, with product info (additional section), xz-compressed.
mkdir -p "$tmp/mar/dir"
printf 'hello\n' > "$tmp/mar/a.txt"
printf 'world\n' > "$tmp/mar/dir/b.txt"
mar=$SIGNING_TEST_VENV/bin/mar
(cd "$tmp/mar" && "$mar" -c "$seeds/mar_parse/plain.mar" a.txt dir/b.txt)
(cd "$tmp/mar" && "$mar" -V 1.0 -H release -c "$seeds/mar_parse/product.mar" a.txt)
(cd "$tmp/mar" && "$mar" -J -c "$seeds/mar_parse/xz.mar" a.txt dir/b.txt)

# --- PE: tiny mingw images (no CRT), one of them Authenticode-signed.
printf 'void start(void) {}\n' > "$tmp/t.c"
x86_64-w64-mingw32-gcc -Os -s -nostdlib -Wl,-e,start -o "$tmp/t64.exe" "$tmp/t.c"
i686-w64-mingw32-gcc -Os -s -nostdlib -shared -Wl,-e,_start -o "$tmp/t32.dll" "$tmp/t.c"
cp "$tmp/t64.exe" "$tmp/t32.dll" "$seeds/pe_authenticode/"
osslsigncode sign -h sha256 -certs "$root/certs/authenticode/ec-chain.pem" \
    -key "$root/certs/authenticode/ec.key" -pass "$(cat "$root/certs/PASSPHRASE")" \
    -in "$tmp/t64.exe" -out "$seeds/pe_authenticode/t64-signed.exe" >/dev/null
osslsigncode extract-signature -in "$seeds/pe_authenticode/t64-signed.exe" \
    -out "$tmp/sig.der" >/dev/null
# extract-signature writes the WIN_CERTIFICATE's payload: the DER SignedData.
cp "$tmp/sig.der" "$seeds/authenticode_pkcs7/ec.p7"

# --- Windows beyond PE: a wixl MSI, gcab cabinets, a catalog made by openssl
#     asn1parse, PowerShell text; each also signed by osslsigncode.
ossl_sign() {
    osslsigncode sign -h sha256 -certs "$root/certs/authenticode/ec-chain.pem" \
        -key "$root/certs/authenticode/ec.key" -pass "$(cat "$root/certs/PASSPHRASE")" \
        -in "$1" -out "$2" >/dev/null
}
mkdir -p "$tmp/msi"
printf 'hello\n' > "$tmp/msi/hello.txt"
cat > "$tmp/msi/t.wxs" <<'WXS'
<?xml version="1.0" encoding="utf-8"?>
<Wix xmlns="http://schemas.microsoft.com/wix/2006/wi">
  <Product Id="12345678-1234-1234-1234-123456789012" Name="Fuzz" Language="1033" Version="1.0.0" Manufacturer="Fuzz" UpgradeCode="12345678-1234-1234-1234-123456789013">
    <Package InstallerVersion="200" Compressed="yes"/>
    <Media Id="1" Cabinet="p.cab" EmbedCab="yes"/>
    <Directory Id="TARGETDIR" Name="SourceDir"><Directory Id="INSTALLDIR" Name="Fuzz">
      <Component Id="C" Guid="12345678-1234-1234-1234-123456789014"><File Id="F" Source="hello.txt"/></Component>
    </Directory></Directory>
    <Feature Id="M" Level="1"><ComponentRef Id="C"/></Feature>
  </Product>
</Wix>
WXS
(cd "$tmp/msi" && wixl -o "$seeds/msi_cfb/wixl.msi" t.wxs)
ossl_sign "$seeds/msi_cfb/wixl.msi" "$seeds/msi_cfb/signed.msi"
(cd "$tmp/msi" && gcab -c "$seeds/cab_parse/stored.cab" hello.txt t.wxs && gcab -cz "$tmp/z.cab" hello.txt)
ossl_sign "$tmp/z.cab" "$seeds/cab_parse/mszip-signed.cab"
python3 "$root/tests/src/make_msix.py" "$seeds/appx_zip/unsigned.msix" --payload 300
python3 "$root/tests/src/make_msix.py" "$seeds/appx_zip/zip64.msix" --zip64 --payload 300
python3 "$root/tests/src/make_msix.py" "$tmp/stream.msixbundle" --stream --bundle --payload 300
ossl_sign "$tmp/stream.msixbundle" "$seeds/appx_zip/signed-stream.msixbundle"
printf 'param($x)\r\nWrite-Output "h\xc3\xa9llo"\r\n' > "$seeds/script_scan/crlf.ps1"
ossl_sign "$seeds/script_scan/crlf.ps1" "$tmp/signed.ps1"
cp "$tmp/signed.ps1" "$seeds/script_scan/signed-ps1"
printf '\xff\xfeW\0r\0i\0t\0e\0\r\0\n\0' > "$seeds/script_scan/utf16.ps1"
openssl asn1parse -noout -genconf /dev/stdin -out "$seeds/cat_parse/unsigned.cat" <<'CNF'
asn1 = SEQUENCE:ci
[ci]
type = OID:1.2.840.113549.1.7.2
sd = EXPLICIT:0,SEQUENCE:sd
[sd]
version = INTEGER:1
algs = SET:empty
content = SEQUENCE:encap
signers = SET:empty
[empty]
[encap]
type = OID:1.3.6.1.4.1.311.10.1
ctl = EXPLICIT:0,SEQUENCE:ctl
[ctl]
usage = SEQUENCE:usage
id = FORMAT:HEX,OCTETSTRING:0123456789ABCDEF
time = UTCTIME:261126000000Z
alg = SEQUENCE:memberalg
subjects = SEQUENCE:empty
[usage]
o = OID:1.3.6.1.4.1.311.12.1.1
[memberalg]
o = OID:1.3.6.1.4.1.311.12.1.2
n = NULL
CNF
ossl_sign "$seeds/cat_parse/unsigned.cat" "$seeds/cat_parse/signed.cat"

# --- APK: aapt package (manifest + a compressed and a stored asset), zipalign.
mkdir -p "$tmp/apk/assets"
cat > "$tmp/apk/AndroidManifest.xml" <<'XML'
<?xml version="1.0" encoding="utf-8"?>
<manifest xmlns:android="http://schemas.android.com/apk/res/android" package="org.example.fuzz">
  <uses-sdk android:minSdkVersion="21"/>
</manifest>
XML
printf 'compressed compressed compressed\n' > "$tmp/apk/assets/a.txt"
printf 'stored\n' > "$tmp/apk/assets/b.dat"
(cd "$tmp/apk" && aapt package -f -M AndroidManifest.xml -I /usr/share/android-framework-res/framework-res.apk -A assets -0 dat -F "$tmp/base.apk" >/dev/null)
zipalign -p -f 4 "$tmp/base.apk" "$seeds/apk_zip/aapt.apk"
(cd "$tmp/apk" && zip -q -X "$seeds/apk_zip/plain.zip" AndroidManifest.xml assets/a.txt)

# --- APK manifests (binary XML): the one above, and one with a codename
#     minSdkVersion, a maxSdkVersion, UTF-16 strings and more elements.
unzip -p "$seeds/apk_zip/aapt.apk" AndroidManifest.xml > "$seeds/apk_manifest/min21.xml"
mkdir -p "$tmp/apk2"
cat > "$tmp/apk2/AndroidManifest.xml" <<'XML'
<?xml version="1.0" encoding="utf-8"?>
<manifest xmlns:android="http://schemas.android.com/apk/res/android" package="org.example.fuzz2" android:versionCode="3">
  <uses-sdk android:minSdkVersion="K" android:maxSdkVersion="28" android:targetSdkVersion="28"/>
  <uses-permission android:name="android.permission.INTERNET"/>
  <application android:label="fuzz \u00e9"><activity android:name=".Main"/></application>
</manifest>
XML
(cd "$tmp/apk2" && aapt package -f -M AndroidManifest.xml -I /usr/share/android-framework-res/framework-res.apk -F "$tmp/apk2.apk" >/dev/null)
unzip -p "$tmp/apk2.apk" AndroidManifest.xml > "$seeds/apk_manifest/codename.xml"

# --- Apple: tiny .app bundles as .tar.gz (a file, a directory, a relative symlink).
app=$tmp/app/Tiny.app/Contents
mkdir -p "$app/MacOS" "$app/Resources"
printf '<?xml version="1.0"?><plist version="1.0"><dict/></plist>\n' > "$app/Info.plist"
printf 'x' > "$app/MacOS/tiny"
ln -s ../MacOS/tiny "$app/Resources/link"
tar -C "$tmp/app" --owner=0 --group=0 --mtime=@0 -czf "$seeds/apple_tarball/tiny.tar.gz" Tiny.app
tar -C "$tmp/app" --owner=0 --group=0 --mtime=@0 --format=gnu -czf "$seeds/apple_tarball/gnu.tar.gz" ./Tiny.app

# --- Apple Mach-O: clang + ld64.lld without an SDK (as tests/src/apple.rs builds them):
# an x86_64 executable, an arm64 dylib, and both in one universal binary.
cat > "$tmp/m.c" <<'C'
int answer(void) { return 42; }
int main(void) { return answer() - 42; }
C
clang -target x86_64-apple-macos11 -fuse-ld=lld -nostdlib -O1 -Wl,-e,_main \
    -o "$seeds/apple_macho/exe-x86_64" "$tmp/m.c"
clang -target arm64-apple-macos11 -fuse-ld=lld -nostdlib -O1 -dynamiclib \
    -o "$seeds/apple_macho/dylib-arm64" "$tmp/m.c"
clang -target arm64-apple-macos11 -fuse-ld=lld -nostdlib -O1 -Wl,-e,_main \
    -o "$tmp/exe-arm64" "$tmp/m.c"
lipo=$(command -v llvm-lipo || command -v llvm-lipo-14 || command -v llvm-lipo-16)
"$lipo" -create "$seeds/apple_macho/exe-x86_64" "$tmp/exe-arm64" \
    -output "$seeds/apple_macho/universal"

# --- GPG keys: the test keys (passphrase-protected, armoured and binary) and an
# unprotected one made here by gpg, with a certify-only primary and a signing subkey.
cp "$root/certs/gpg/secret.asc" "$seeds/gpg_key/ed25519.asc"
cp "$root/certs/gpg-rsa/secret.asc" "$seeds/gpg_key/rsa4096.asc"
gpg --dearmor < "$root/certs/gpg/secret.asc" > "$seeds/gpg_key/ed25519.gpg"
mkdir -m 700 "$tmp/gnupg"
g() { gpg --homedir "$tmp/gnupg" --batch --no-tty --pinentry-mode loopback --passphrase '' "$@"; }
g --quick-gen-key 'fuzz seed <fuzz@example.invalid>' ed25519 cert never 2>/dev/null
fpr=$(g --with-colons --list-keys | awk -F: '/^fpr:/ {print $10; exit}')
g --quick-add-key "$fpr" ed25519 sign never 2>/dev/null
g --armor --export-secret-keys > "$seeds/gpg_key/plain-subkey.asc"
gpgconf --homedir "$tmp/gnupg" --kill all 2>/dev/null || true

# --- Tokens: valid for the fuzz target's secret, peer and clock (see fuzz_targets/token.rs).
python3 - "$seeds/token" <<'PY'
import base64, hashlib, hmac, sys
out = sys.argv[1]
def b64(b): return base64.b64encode(b).decode().rstrip("=")
def mint(secret, ip, lo, hi, chaff=b"0123456789abcdef"):
    payload = f"{ip}:{lo}:{hi}:{b64(chaff)}"
    mac = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return f"{payload}!{b64(mac)}"
now = 1_700_000_000
seeds = {
    "valid": mint("fuzz-secret-1", "192.0.2.7", now - 60, now + 60),
    "valid-v6-mapped": mint("fuzz-secret-2", "::ffff:192.0.2.7", now - 60, now + 60) + "\n",
    "expired": mint("fuzz-secret-1", "192.0.2.7", 1, 2),
    "v6": mint("fuzz-secret-1", "[2001:db8::1]", now, now),
    "basic": "Basic " + base64.b64encode(b"user:pass").decode(),
}
for name, text in seeds.items():
    open(f"{out}/{name}", "w").write(text)
PY

# --- Config: the documented example and a minimal one.
cp "$root/signing.ini.example" "$seeds/config/signing.ini.example"
cat > "$seeds/config/minimal.ini" <<'INI'
[server]
listen = 127.0.0.1:9110
work_dir = /tmp/w
[security]
token_secrets = s3cret
[format:gpg]
type = gpg
key = k.asc
INI
# Regression: tracing-subscriber's filter parser panicked on this level (issue 21).
printf '[server]\nlisten = 127.0.0.1:9110\nwork_dir = /tmp/w\n[security]\ntoken_secrets = s3cret\n[logging]\nlevel = info, :w\xce\x8d=;\n[format:gpg]\ntype = gpg\nkey = k.asc\n' \
    > "$seeds/config/level-non-ascii.ini"

# --- RPM: a small noarch package from rpmbuild (Debian rpm), unsigned.
mkdir -p "$tmp/rpm"
cat > "$tmp/rpm/seed.spec" <<'SPEC'
Name: seed
Version: 1.0
Release: 1
Summary: fuzz seed
License: MIT
BuildArch: noarch
%description
A fuzz seed.
%install
mkdir -p %{buildroot}/usr/share/seed
echo hello > %{buildroot}/usr/share/seed/a.txt
%files
/usr/share/seed/a.txt
SPEC
rpmbuild -bb --quiet --define "_topdir $tmp/rpm/top" --define 'debug_package %{nil}' \
    --define '__os_install_post %{nil}' --define '_build_id_links none' --nodeps "$tmp/rpm/seed.spec"
cp "$tmp/rpm/top/RPMS/noarch/seed-1.0-1.noarch.rpm" "$seeds/rpm_headers/seed.rpm"

du -sh "$seeds"/* >&2
