//! Helpers for the Authenticode tests: PE fixtures compiled with mingw-w64,
//! `osslsigncode verify`, and a real RFC 3161 time-stamping authority on
//! loopback (`openssl ts -reply` behind a small HTTP/1.0 responder).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::{certs, run};

const EXE_C: &str = r#"
#include <stdio.h>
int main(void) { puts("hello from a signed test program"); return 0; }
"#;
const DLL_C: &str = r#"
__declspec(dllexport) int add(int a, int b) { return a + b; }
"#;

/// Compiles a small test program (or DLL) with mingw-w64 into `dir`;
/// `arch` is `x86_64` (PE32+) or `i686` (PE32).
pub fn build_pe(dir: &Path, arch: &str, dll: bool) -> PathBuf {
    let src = dir.join(if dll { "lib.c" } else { "main.c" });
    std::fs::write(&src, if dll { DLL_C } else { EXE_C }).expect("write C source");
    let out = dir.join(format!(
        "{arch}-{}",
        if dll { "test.dll" } else { "test.exe" }
    ));
    let mut cmd = Command::new(format!("{arch}-w64-mingw32-gcc"));
    if dll {
        cmd.arg("-shared");
    }
    let (ok, text) = run(cmd.arg("-O1").arg("-o").arg(&out).arg(&src));
    assert!(
        ok,
        "mingw-w64 failed (apt-get install gcc-mingw-w64): {text}"
    );
    out
}

/// `osslsigncode verify` against the test code-signing CA (also trusted
/// for timestamps): (its output, whether it ended in `Succeeded`).
pub fn osslsigncode_verify(file: &Path) -> (String, bool) {
    let ca = certs().join("authenticode/ca.pem");
    let (ok, text) = run(Command::new("osslsigncode")
        .arg("verify")
        .arg("-CAfile")
        .arg(&ca)
        .arg("-TSA-CAfile")
        .arg(&ca)
        .arg("-in")
        .arg(file));
    let succeeded = ok && text.trim_end().ends_with("Succeeded");
    (text, succeeded)
}

/// Whether osslsigncode reported a wrong PE CheckSum (2.9 says "invalid PE
/// checksum", 2.5 "MISMATCH").
pub fn checksum_mismatch(text: &str) -> bool {
    text.contains("invalid PE checksum") || text.contains("MISMATCH")
}

/// How a test TSA answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsaMode {
    /// A real RFC 3161 reply from `openssl ts -reply`.
    Good,
    /// HTTP 500.
    ServerError,
    /// HTTP 200 with bytes that are not a TimeStampResp.
    Garbage,
}

/// A time-stamping authority on 127.0.0.1; its thread lives as long as the test process.
pub struct Tsa {
    /// `http://127.0.0.1:PORT/tsa`.
    pub url: String,
    /// Requests answered so far.
    pub requests: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

impl Tsa {
    /// Starts a TSA answering as `mode`.
    pub fn start(mode: TsaMode) -> Tsa {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = certs().join("authenticode");
        std::fs::write(dir.path().join("serial"), "01\n").expect("serial");
        let cnf = dir.path().join("tsa.cnf");
        std::fs::write(
            &cnf,
            format!(
                "[tsa]\ndefault_tsa = tsa1\n[tsa1]\ndir = {dir}\nserial = $dir/serial\n\
                 crypto_device = builtin\nsigner_cert = {signer}\ncerts = {ca}\nsigner_key = {key}\n\
                 signer_digest = sha256\ndefault_policy = 1.3.6.1.4.1.55555.1\n\
                 digests = sha256, sha384, sha512\naccuracy = secs:1\nordering = yes\n\
                 tsa_name = yes\ness_cert_id_chain = no\ness_cert_id_alg = sha256\n",
                dir = dir.path().display(),
                signer = c.join("tsa.pem").display(),
                ca = c.join("ca.pem").display(),
                key = c.join("tsa.key").display(),
            ),
        )
        .expect("tsa.cnf");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/tsa", listener.local_addr().expect("addr"));
        let requests = Arc::new(AtomicUsize::new(0));
        let (count, work) = (Arc::clone(&requests), dir.path().to_path_buf());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let _ = answer(stream, mode, &work, &cnf, n);
            }
        });
        Tsa {
            url,
            requests,
            _dir: dir,
        }
    }

    /// Requests answered so far.
    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A URL on which nothing listens (connection refused).
pub fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}/tsa")
}

fn answer(
    stream: TcpStream,
    mode: TsaMode,
    dir: &Path,
    cnf: &Path,
    n: usize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut len = 0usize;
    let mut first = String::new();
    reader.read_line(&mut first)?;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let (status, reply) = match mode {
        TsaMode::ServerError => (
            "500 Internal Server Error",
            b"down for maintenance".to_vec(),
        ),
        TsaMode::Garbage => ("200 OK", b"this is not a TimeStampResp".to_vec()),
        TsaMode::Good => {
            let (q, r) = (dir.join(format!("q{n}.tsq")), dir.join(format!("r{n}.tsr")));
            std::fs::write(&q, &body)?;
            let (ok, text) = run(Command::new("openssl")
                .args(["ts", "-reply", "-config"])
                .arg(cnf)
                .arg("-queryfile")
                .arg(&q)
                .arg("-out")
                .arg(&r));
            if ok {
                ("200 OK", std::fs::read(&r)?)
            } else {
                ("500 Internal Server Error", text.into_bytes())
            }
        }
    };
    let mut w = stream;
    write!(
        w,
        "HTTP/1.0 {status}\r\nContent-Type: application/timestamp-reply\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.len()
    )?;
    w.write_all(&reply)?;
    w.flush()
}
