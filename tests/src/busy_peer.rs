//! A peer that is overloaded for real: [`answer_503`] terminates TLS with
//! the test server certificate (certs/, test-only) and answers
//! `HTTP/1.1 503 Service Unavailable` + `Retry-After`, as a signing server
//! does when its queue is full. The fault proxy uses it for
//! [`crate::proxy::NetFault::Unavailable`], so a burst of connections can be
//! refused while the rest pass through to a real server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The body of the proxy's 503, so tests can tell it from a server's.
pub const BODY_503: &str =
    "proxy: too much work queued (test burst); try again later or use another host";

/// Answers one connection with a 503 + `Retry-After: 1` over TLS: reads the
/// request head, answers, then reads and discards what the client still
/// sends (bounded: 3 s, 64 MiB) so it reads the answer instead of a reset.
pub fn answer_503(tcp: TcpStream) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ServerConnection::new(crate::signtool::tls_config())
        .map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut head = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < (1 << 20) {
        let n = tls.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    write!(
        tls,
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY_503}\n",
        BODY_503.len() + 1
    )?;
    tls.flush()?;
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(500)))?;
    let (deadline, mut drained) = (Instant::now() + Duration::from_secs(3), 0usize);
    while Instant::now() < deadline && drained < (64 << 20) {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(())
}
