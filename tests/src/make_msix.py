"""Writes a minimal MSIX/APPX package (or bundle) for the tests and the fuzz seeds.

usage: make_msix.py OUT [--stream] [--zip64] [--bundle] [--payload N]
                        [--hash sha256|sha384|sha1] [--no-block-map]

The package: AppxManifest.xml (or AppxMetadata/AppxBundleManifest.xml), a stored
payload of N bytes and readme.txt, a correct AppxBlockMap.xml (one base64 hash per
64 KiB block of each stored file, LfhSize the local header size) and
[Content_Types].xml, both deflated. --stream writes to a pipe-like stream, so
every entry gets a data descriptor (the way streaming packers write); --zip64
makes every record a ZIP64 one (end records, extra fields, 8-byte descriptors),
the way MakeAppx writes packages.
"""
import base64, hashlib, io, sys, zipfile

args = sys.argv[1:]
out = args[0]
flag = lambda f: f in args
opt = lambda f, d: args[args.index(f) + 1] if f in args else d
payload = int(opt("--payload", "150000"))
alg = opt("--hash", "sha256")
uri = {"sha256": "http://www.w3.org/2001/04/xmlenc#sha256",
       "sha384": "http://www.w3.org/2001/04/xmldsig-more#sha384",
       "sha1": "http://www.w3.org/2000/09/xmldsig#sha1"}[alg]
if flag("--bundle"):
    manifest = ("AppxMetadata/AppxBundleManifest.xml",
                b'<?xml version="1.0" encoding="UTF-8"?>\n<Bundle xmlns="http://schemas.microsoft.com/appx/2013/bundle" SchemaVersion="5.0"><Identity Name="Test.Bundle" Publisher="CN=Test" Version="1.0.0.0"/></Bundle>\n')
    inner = "app_x64.msix"
else:
    manifest = ("AppxManifest.xml",
                b'<?xml version="1.0" encoding="utf-8"?>\n<Package xmlns="http://schemas.microsoft.com/appx/manifest/foundation/windows10"><Identity Name="Test.App" Publisher="CN=Test" Version="1.0.0.0"/></Package>\n')
    inner = "payload/app.bin"
files = [manifest, (inner, bytes((i * 7) % 251 for i in range(payload))), ("readme.txt", b"hello\n")]


def block_map():
    h = getattr(hashlib, alg)
    s = ('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
         '<BlockMap xmlns="http://schemas.microsoft.com/appx/2010/blockmap" HashMethod="%s">' % uri)
    for name, data in files:
        s += '<File Name="%s" Size="%d" LfhSize="%d">' % (name.replace("/", "\\"), len(data), 30 + len(name))
        for i in range(0, len(data), 65536):
            s += '<Block Hash="%s"/>' % base64.b64encode(h(data[i:i + 65536]).digest()).decode()
        s += "</File>"
    return (s + "</BlockMap>").encode()


content_types = (b'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                 b'<Default Extension="xml" ContentType="application/vnd.ms-appx.manifest+xml"/>'
                 b'<Default Extension="bin" ContentType="application/octet-stream"/>'
                 b'<Default Extension="msix" ContentType="application/vnd.ms-appx"/>'
                 b'<Default Extension="txt" ContentType="text/plain"/>'
                 b'<Override PartName="/AppxBlockMap.xml" ContentType="application/vnd.ms-appx.blockmap+xml"/></Types>')


class Stream(io.RawIOBase):
    def __init__(self, f):
        self.f = f

    def writable(self):
        return True

    def write(self, b):
        return self.f.write(b)


if flag("--zip64"):
    zipfile.ZIP64_LIMIT = 0
    zipfile.ZIP_FILECOUNT_LIMIT = 0

with open(out, "wb") as f:
    with zipfile.ZipFile(Stream(f) if flag("--stream") else f, "w") as z:
        info = lambda n: zipfile.ZipInfo(n, (2024, 1, 1, 0, 0, 0))
        for name, data in files:
            z.writestr(info(name), data, zipfile.ZIP_STORED)
        if not flag("--no-block-map"):
            z.writestr(info("AppxBlockMap.xml"), block_map(), zipfile.ZIP_DEFLATED)
        z.writestr(info("[Content_Types].xml"), content_types, zipfile.ZIP_DEFLATED)
