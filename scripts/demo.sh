#!/usr/bin/env bash
# The main job, end to end, on the TEST keys of certs/:
#   1. starts signing-server on signing.ini.example, typing the key passphrase on stdin;
#   2. mints a token for this machine (POST /token), as the token-issuing host does;
#   3. signs a sample file in every format the server has, with our signtool client
#      (and once with Mozilla's signtool 4.x, which must keep working unchanged);
#   4. verifies each output with the tool users trust (gpgv, mar, apksigner, osslsigncode,
#      rcodesign, rpmkeys), then stops the server.
# ./scripts/demo.sh            (port 9110 as in signing.ini.example; DEMO_PORT=N to change)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

say "building"
# The same build as scripts/test.sh (binaries and tests: one feature set), so running
# one after the other never rebuilds the dependencies.
cargo build --workspace --bins --tests --locked -q
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
# One line per encrypted key (the test keys all share one passphrase); extra lines are ignored.
nkeys=$(grep -c '^\[format:' "$work/signing.ini")
for _ in $(seq 1 "$nkeys"); do cat certs/PASSPHRASE; echo; done | "$bin/signing-server" "$work/signing.ini" >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 1 100); do
    grep -q "listening on" "$work/server.out" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
url="https://127.0.0.1:$port"
curl -sf --cacert certs/ca.pem "$url/health"; echo

printf 'test-only-minting-password\n' > "$work/mint-password"
say "minting a token for 127.0.0.1 with signtool token (POST /token)"
"$bin/signtool" token -H "127.0.0.1:$port" -c certs/ca.pem -u tokenhost \
    --password-file "$work/mint-password" -i 127.0.0.1 -d 300 -o "$work/token"

sign() { # FORMAT FILE: sign FILE in place (gpg: FILE.asc beside it) with our signtool
    "$bin/signtool" sign -H "$1:127.0.0.1:$port" -c certs/ca.pem -t "$work/token" -n "$work/nonce" -f "$1" "$2"
}

say "gpg: a detached signature, verified with gpgv"
head -c 1000000 /dev/urandom > "$work/sample.tar.gz"
sign gpg "$work/sample.tar.gz"
gpgv --keyring ./certs/gpg/public.gpg "$work/sample.tar.gz.asc" "$work/sample.tar.gz"

say "gpg again with Mozilla's signtool 4.x client, unchanged"
"$SIGNING_TEST_VENV/bin/signtool" -H "gpg:127.0.0.1:$port" -c certs/ca.pem \
    -t "$work/token" -n "$work/nonce" -f gpg -o "$work/sample.tar.gz.moz.asc" "$work/sample.tar.gz"
gpgv --keyring ./certs/gpg/public.gpg "$work/sample.tar.gz.moz.asc" "$work/sample.tar.gz"

say "mar and mar_sha384: a MAR made with Mozilla's mar tool, verified with it"
mkdir -p "$work/mar-src" && seq 1 50000 > "$work/mar-src/update.txt"
for fmt in mar mar_sha384; do
    "$SIGNING_TEST_VENV/bin/mar" -C "$work/mar-src" -c "$work/$fmt.mar" update.txt
    sign "$fmt" "$work/$fmt.mar"
done
"$SIGNING_TEST_VENV/bin/mar" -v "$work/mar.mar" -k certs/mar/sha1-2048.pub.pem
"$SIGNING_TEST_VENV/bin/mar" -v "$work/mar_sha384.mar" -k certs/mar/sha384-4096.pub.pem

say "apk: an APK made with aapt + zipalign, verified with apksigner"
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
sign apk "$work/demo.apk"
apksigner verify --verbose --print-certs "$work/demo.apk" | grep -E "^(Verifies|Verified using v[123])|certificate SHA-256"

say "sha2signcode: a Windows PE built with mingw-w64, verified with osslsigncode"
printf '#include <stdio.h>\nint main(void) { puts("hello from a signed PE"); return 0; }\n' > "$work/hello.c"
x86_64-w64-mingw32-gcc -O1 -o "$work/hello.exe" "$work/hello.c"
sign sha2signcode "$work/hello.exe"
osslsigncode verify -CAfile certs/authenticode/ca.pem -in "$work/hello.exe" | tail -n 1

say "sha2signcode beyond PE: an MSI (wixl; signed by Mozilla's client), a cabinet (gcab), a PowerShell script, an MSIX package"
mkdir -p "$work/msi" && printf 'hello from a signed MSI\r\n' > "$work/msi/hello.txt"
cat > "$work/msi/hello.wxs" <<'WXS'
<?xml version="1.0" encoding="utf-8"?>
<Wix xmlns="http://schemas.microsoft.com/wix/2006/wi">
  <Product Id="*" Name="signing-server demo" Language="1033" Version="1.0.0" Manufacturer="demo" UpgradeCode="6f8b0e52-3a8e-4d7c-9f4a-1c2b3d4e5f61">
    <Package InstallerVersion="200" Compressed="yes"/>
    <Media Id="1" Cabinet="p.cab" EmbedCab="yes"/>
    <Directory Id="TARGETDIR" Name="SourceDir"><Directory Id="ProgramFilesFolder"><Directory Id="INSTALLDIR" Name="Demo">
      <Component Id="Hello" Guid="0b6a3c1e-2f4d-4e8a-9b7c-5d6e7f8a9b0d"><File Id="HelloTxt" Source="hello.txt"/></Component>
    </Directory></Directory></Directory>
    <Feature Id="Main" Level="1"><ComponentRef Id="Hello"/></Feature>
  </Product>
</Wix>
WXS
(cd "$work/msi" && wixl -o "$work/hello.msi" hello.wxs)
"$SIGNING_TEST_VENV/bin/signtool" -H "sha2signcode:127.0.0.1:$port" -c certs/ca.pem \
    -t "$work/token" -n "$work/nonce" -f sha2signcode -o "$work/hello-signed.msi" "$work/hello.msi"
osslsigncode verify -CAfile certs/authenticode/ca.pem -in "$work/hello-signed.msi" | tail -n 1
(cd "$work/msi" && gcab -cz "$work/hello.cab" hello.txt hello.wxs)
sign sha2signcode "$work/hello.cab"
osslsigncode verify -CAfile certs/authenticode/ca.pem -in "$work/hello.cab" | tail -n 1
printf 'Write-Output "hello from a signed script"\r\n' > "$work/hello.ps1"
sign sha2signcode "$work/hello.ps1"
osslsigncode verify -CAfile certs/authenticode/ca.pem -in "$work/hello.ps1" | tail -n 1
python3 tests/src/make_msix.py "$work/hello.msix"
sign sha2signcode "$work/hello.msix"
osslsigncode verify -CAfile certs/authenticode/ca.pem -in "$work/hello.msix" | tail -n 1

say "macapp: a Mach-O and a .app bundle (clang + ld64.lld, no SDK), verified with rcodesign"
printf 'int main(void) {\n  __asm__ volatile("mov $0x2000001, %%eax\\n xor %%edi, %%edi\\n syscall");\n  return 0;\n}\n' > "$work/m.c"
clang -target x86_64-apple-macos11 -fuse-ld=lld -nostdlib -O1 -Wl,-e,_main -o "$work/hello-macos" "$work/m.c"
sign macapp "$work/hello-macos"
"$SIGNING_RCODESIGN" verify "$work/hello-macos"
mkdir -p "$work/app/Demo.app/Contents/MacOS"
cp "$work/hello-macos" "$work/app/Demo.app/Contents/MacOS/demo"
cat > "$work/app/Demo.app/Contents/Info.plist" <<'PLIST'
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
  <key>CFBundleExecutable</key><string>demo</string>
  <key>CFBundleIdentifier</key><string>org.example.signing.demo</string>
  <key>CFBundleName</key><string>Demo</string>
  <key>CFBundlePackageType</key><string>APPL</string>
  <key>CFBundleVersion</key><string>1.0</string>
</dict></plist>
PLIST
tar -C "$work/app" -czf "$work/Demo.app.tar.gz" Demo.app
sign macapp "$work/Demo.app.tar.gz"
mkdir -p "$work/app-signed" && tar -C "$work/app-signed" -xzf "$work/Demo.app.tar.gz"
"$SIGNING_RCODESIGN" verify "$work/app-signed/Demo.app/Contents/MacOS/demo"   # the bundle's main executable

say "rpm: an RPM built with rpmbuild, verified with rpmkeys (a private rpm database holding the test key)"
mkdir -p "$work/rpm"
cat > "$work/rpm/demo.spec" <<'SPEC'
Name: signing-demo
Version: 1.0
Release: 1
Summary: signing-server demo package
License: MIT
BuildArch: noarch
%description
A package signed by the demo.
%install
mkdir -p %{buildroot}/usr/share/signing-demo
seq 1 20000 > %{buildroot}/usr/share/signing-demo/numbers.txt
%files
/usr/share/signing-demo/numbers.txt
SPEC
rpmbuild -bb --quiet --define "_topdir $work/rpm/top" --define 'debug_package %{nil}' \
    --define '__os_install_post %{nil}' --define '_build_id_links none' --nodeps "$work/rpm/demo.spec"
cp "$work/rpm/top/RPMS/noarch/signing-demo-1.0-1.noarch.rpm" "$work/demo.rpm"
sign rpm "$work/demo.rpm"
rpmkeys --dbpath "$work/rpmdb" --import certs/gpg-rsa/public.asc
rpmkeys --dbpath "$work/rpmdb" --checksig -v "$work/demo.rpm"

say "inrelease: an apt repository's Release (apt-ftparchive) clear-signed into InRelease, verified with gpgv"
mkdir -p "$work/apt/dists/stable/main/binary-all"
: > "$work/apt/dists/stable/main/binary-all/Packages"
(cd "$work/apt" && apt-ftparchive -o APT::FTPArchive::Release::Suite=stable \
    -o APT::FTPArchive::Release::Components=main release dists/stable > "$work/Release")
cp "$work/Release" "$work/apt/dists/stable/InRelease"
sign inrelease "$work/apt/dists/stable/InRelease"
head -n 3 "$work/apt/dists/stable/InRelease"
gpgv --keyring ./certs/gpg/public.gpg "$work/apt/dists/stable/InRelease"

say "audit log (last lines):"
tail -n 8 /tmp/signing-server-example/audit.log
say "demo OK: every format of signing.ini.example signed by signtool and verified by its own tool"
