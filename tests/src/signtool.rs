//! Helpers for the `signtool` client's end-to-end tests: run the real binary
//! with short timeouts, and fault injectors — tiny TCP/TLS peers built on
//! std::net that misbehave in one precise way (never answer, 503, close
//! mid-body, lie about the digest, read or write very slowly). They never sign
//! anything: every signature a test checks comes from a real signing-server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{bin, certs};

/// `signtool` with the test CA, a token file, and short timeouts; hosts tried in order.
pub fn signtool_sign(hosts: &[String], token: &Path, nonce: &Path) -> Command {
    let mut c = Command::new(bin("signtool"));
    for h in hosts {
        c.arg("-H").arg(h);
    }
    c.arg("-c")
        .arg(certs().join("ca.pem"))
        .arg("-t")
        .arg(token)
        .arg("-n")
        .arg(nonce);
    c.args([
        "--connect-timeout",
        "2",
        "--read-timeout",
        "4",
        "--backoff-base-ms",
        "20",
        "--backoff-max-ms",
        "200",
    ]);
    c.args(["--timeout", "90", "--no-shuffle"]);
    c
}

/// Runs `cmd`; returns (exit code, stderr + stdout).
pub fn output(cmd: &mut Command) -> (i32, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stderr).to_string() + &String::from_utf8_lossy(&stdout),
    )
}

/// `gpg:127.0.0.1:PORT` for a server URL.
pub fn host_of(format: &str, url: &str) -> String {
    format!("{format}:{}", url.trim_start_matches("https://"))
}

/// Files whose name ends with `.signtool-tmp` under `dir` (leftovers).
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".signtool-tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// How a fault injector misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerFault {
    /// Accepts TCP and never says a word (not even TLS).
    Silent,
    /// Answers every request `503` with `Retry-After: 1`.
    Busy,
    /// Answers `200` with a digest header, sends part of the body, then drops the connection.
    ResetMidBody,
    /// Answers `200` with a body whose digests differ from its X-SHA256/X-SHA1 headers.
    WrongDigest,
    /// GET: plain 404 (unknown); POST: reads the upload very slowly and never answers.
    SlowSink,
    /// GET: 200 with a 64 MiB body sent very slowly.
    SlowSource,
    /// GET: plain 404 (unknown); POST: reads the headers, then never reads nor answers.
    Stall,
}

/// The bogus body WrongDigest serves; it must never land in an output file.
pub const BOGUS: &[u8] = b"-----BEGIN PGP SIGNATURE-----\nthis is not the signature you are looking for\n-----END PGP SIGNATURE-----\n";

/// A running fault injector on 127.0.0.1 (stopped on drop).
pub struct FakePeer {
    /// Its address.
    pub addr: SocketAddr,
    /// TCP connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Bytes of request bodies read (SlowSink) or response bodies sent (SlowSource, ResetMidBody).
    pub bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// The test server certificate and key, for peers that answer TLS themselves.
pub(crate) fn tls_config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(certs().join("server-chain.pem"))
                    .expect("chain")
                    .map(|c| c.expect("cert"))
                    .collect();
            let key = PrivateKeyDer::from_pem_file(certs().join("server.key")).expect("server.key");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("server config");
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(cfg)
        })
        .clone()
}

impl FakePeer {
    /// Starts one.
    pub fn start(fault: PeerFault) -> FakePeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (connections, bytes, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (c, b, s) = (connections.clone(), bytes.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                c.fetch_add(1, Ordering::Relaxed);
                if fault == PeerFault::Silent {
                    held.push(stream);
                    continue;
                }
                let (b, s) = (b.clone(), s.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, fault, &b, &s);
                });
            }
        });
        FakePeer {
            addr,
            connections,
            bytes,
            stop,
        }
    }

    /// `FORMAT:127.0.0.1:PORT`.
    pub fn host(&self, format: &str) -> String {
        format!("{format}:{}", self.addr)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    tcp: TcpStream,
    fault: PeerFault,
    bytes: &AtomicU64,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let conn = rustls::ServerConnection::new(tls_config()).map_err(std::io::Error::other)?;
    let tls = rustls::StreamOwned::new(conn, tcp);
    let mut reader = BufReader::new(tls);
    // Request line and headers.
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut content_length = 0u64;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
    }
    let is_get = request_line.starts_with("GET ");
    let respond = |r: &mut BufReader<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>,
                   head: &str,
                   body: &[u8]|
     -> std::io::Result<()> {
        let s = r.get_mut();
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        s.flush()
    };
    match fault {
        PeerFault::Silent => Ok(()),
        PeerFault::Busy => {
            let body = b"too much work queued; try again later or use another host\n";
            let head = format!(
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            respond(&mut reader, &head, body)
        }
        PeerFault::WrongDigest => {
            let other = crate::data(1000, 7);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-SHA1-Digest: {}\r\nX-SHA256-Digest: {}\r\nConnection: close\r\n\r\n",
                BOGUS.len(),
                crate::sha1_hex(&other),
                crate::sha256_hex(&other)
            );
            respond(&mut reader, &head, BOGUS)
        }
        PeerFault::ResetMidBody => {
            let body = crate::data(100_000, 8);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-SHA256-Digest: {}\r\nConnection: close\r\n\r\n",
                body.len(),
                crate::sha256_hex(&body)
            );
            respond(&mut reader, &head, body.get(..20_000).unwrap_or_default())?;
            bytes.fetch_add(20_000, Ordering::Relaxed);
            // Drop the TCP connection without a TLS close_notify: a truncated body.
            let _ = reader.get_mut().sock.shutdown(std::net::Shutdown::Both);
            Ok(())
        }
        PeerFault::SlowSink | PeerFault::Stall if is_get => {
            let body = b"unknown: upload the file first\n";
            let head = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            respond(&mut reader, &head, body)
        }
        PeerFault::SlowSink => {
            // About 3 MB/s: 64 KiB, then a pause.
            let mut buf = vec![0u8; 64 * 1024];
            let mut left = content_length;
            while left > 0 && !stop.load(Ordering::Relaxed) {
                reader.read_exact(&mut buf[..(left.min(64 * 1024) as usize)])?;
                left = left.saturating_sub(64 * 1024);
                bytes.fetch_add(64 * 1024, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        }
        PeerFault::Stall => {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        }
        PeerFault::SlowSource => {
            let total = 64u64 << 20;
            let head =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nX-SHA256-Digest: {}\r\nConnection: close\r\n\r\n", "0".repeat(64));
            respond(&mut reader, &head, b"")?;
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0u64;
            while sent < total && !stop.load(Ordering::Relaxed) {
                reader.get_mut().write_all(&chunk)?;
                reader.get_mut().flush()?;
                sent += chunk.len() as u64;
                bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        }
    }
}
