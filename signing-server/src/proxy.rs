//! The PROXY protocol (HAProxy's, v1 text and v2 binary) spoken by the L4 load
//! balancers listed in `[server] proxy_protocol_from`: each of their
//! connections starts with a header naming the client's address, which then
//! stands for the peer everywhere (allow-lists, token IP binding, logs, audit).
//!
//! The header is read exactly, never past its end (the TLS handshake follows
//! it on the same connection): [`next_step`] says how many more bytes to read
//! from what was read so far, bounded by [`V1_MAX`] and [`V2_MAX_PAYLOAD`];
//! [`parse`] reads the complete header with the `ppp` crate. Both are pure
//! and fuzzed (`proxy_header`); [`read`] drives them over a socket and its
//! caller bounds it in time.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// The 12 bytes a v2 header starts with.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (the specification's figure).
pub const V1_MAX: usize = 107;
/// The largest v2 payload accepted (addresses and TLVs): balancers' TLVs
/// (AWS's VPC endpoint id, GCP's connection id, SSL details) take tens of
/// bytes; the specification allows 65,535, which nobody needs here.
pub const V2_MAX_PAYLOAD: usize = 1024;
/// Bytes every header has at least (and that a v2 header starts with).
const FIRST_READ: usize = 12;

/// Whom a connection from a balancer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client's address, as the balancer saw it.
    Client(SocketAddr),
    /// v2 `LOCAL` or v1 `UNKNOWN`: the balancer speaks for itself (its health
    /// checks), and is judged as its own address.
    Balancer,
}

/// Why a connection from a balancer was closed before TLS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The connection did not start with a header.
    #[error(
        "a connection from a proxy_protocol_from address must start with a PROXY protocol header"
    )]
    Missing,
    /// Longer than the bounds above.
    #[error("PROXY protocol header longer than {0} bytes")]
    TooLong(usize),
    /// A header that the specification does not allow.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    /// A v2 header for a UNIX socket or a datagram: not a TCP client.
    #[error("PROXY protocol header for a non-TCP source ({0})")]
    NotTcp(&'static str),
    /// The balancer closed the connection inside the header.
    #[error("connection closed inside the PROXY protocol header")]
    Closed,
}

/// What to do next, given the bytes of the connection read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read exactly this many more bytes.
    Read(usize),
    /// `read` is a whole header: [`parse`] it.
    Done,
}

/// The next read for the header whose first bytes are `read`, or why there
/// can be no header. Never asks for a byte past the header's end.
pub fn next_step(read: &[u8]) -> Result<Step, ProxyError> {
    if read.len() < FIRST_READ {
        return Ok(Step::Read(FIRST_READ - read.len()));
    }
    if read.starts_with(V2_SIGNATURE) {
        let Some(len) = read.get(14..16) else {
            return Ok(Step::Read(16 - read.len()));
        };
        let payload = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if payload > V2_MAX_PAYLOAD {
            return Err(ProxyError::TooLong(16 + V2_MAX_PAYLOAD));
        }
        let total = 16 + payload;
        return match total.checked_sub(read.len()) {
            Some(0) => Ok(Step::Done),
            Some(more) => Ok(Step::Read(more)),
            None => Err(ProxyError::TooLong(total)),
        };
    }
    if !read.starts_with(b"PROXY ") {
        return Err(ProxyError::Missing);
    }
    if read.ends_with(b"\r\n") {
        return Ok(Step::Done);
    }
    if read.len() >= V1_MAX {
        return Err(ProxyError::TooLong(V1_MAX));
    }
    Ok(Step::Read(1))
}

/// Reads a whole header, as [`next_step`] finds it.
pub fn parse(header: &[u8]) -> Result<Source, ProxyError> {
    let malformed = |e: &dyn std::fmt::Display| ProxyError::Malformed(e.to_string());
    if header.starts_with(V2_SIGNATURE) {
        use ppp::v2::{Addresses, Command, Header, Protocol};
        let h = Header::try_from(header).map_err(|e| malformed(&e))?;
        if h.len() != header.len() {
            return Err(ProxyError::Malformed("length field disagrees".into()));
        }
        // After the addresses, whole TLVs only (ppp reads them lazily).
        if let Some(Err(e)) = h.tlvs().find(Result::is_err) {
            return Err(malformed(&e));
        }
        if h.command == Command::Local {
            return Ok(Source::Balancer);
        }
        return match h.addresses {
            Addresses::Unspecified => Ok(Source::Balancer),
            Addresses::Unix(_) => Err(ProxyError::NotTcp("UNIX socket")),
            _ if h.protocol != Protocol::Stream => Err(ProxyError::NotTcp("datagram")),
            Addresses::IPv4(a) => Ok(Source::Client(SocketAddr::from((
                a.source_address,
                a.source_port,
            )))),
            Addresses::IPv6(a) => Ok(Source::Client(SocketAddr::from((
                a.source_address,
                a.source_port,
            )))),
        };
    }
    use ppp::v1::{Addresses, Header};
    let h = Header::try_from(header).map_err(|e| malformed(&e))?;
    if h.header.len() != header.len() {
        return Err(ProxyError::Malformed("bytes after the CRLF".into()));
    }
    match h.addresses {
        Addresses::Unknown => Ok(Source::Balancer),
        Addresses::Tcp4(a) => Ok(Source::Client(SocketAddr::from((
            a.source_address,
            a.source_port,
        )))),
        Addresses::Tcp6(a) => Ok(Source::Client(SocketAddr::from((
            a.source_address,
            a.source_port,
        )))),
    }
}

/// Reads the header at the start of `conn` (exactly its bytes) and parses it.
/// The caller bounds the time it may take.
pub async fn read<R: AsyncRead + Unpin>(conn: &mut R) -> Result<Source, ProxyError> {
    let mut buf = Vec::with_capacity(64);
    loop {
        match next_step(&buf)? {
            Step::Done => return parse(&buf),
            Step::Read(n) => {
                let start = buf.len();
                buf.resize(start + n, 0);
                let got = buf.get_mut(start..).unwrap_or_default();
                conn.read_exact(got).await.map_err(|_| ProxyError::Closed)?;
            }
        }
    }
}

/// Whether the first bytes of a connection look like a PROXY header: sent by
/// a peer that is not a listed balancer, it is refused (no spoofing).
pub fn looks_like_header(first: &[u8]) -> bool {
    first.len() >= 5 && (V2_SIGNATURE.starts_with(first) || first.starts_with(b"PROXY"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(bytes: &[u8]) -> (Result<Source, ProxyError>, usize) {
        let mut r = bytes;
        let got = read(&mut r).await;
        (got, bytes.len() - r.len())
    }

    fn v2(command: u8, family: u8, addrs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h
    }

    #[tokio::test]
    async fn v1_and_v2_give_the_client_and_stop_at_the_header_end() {
        let tls = b"\x16\x03\x01rest of the handshake";
        let v1 = [&b"PROXY TCP4 127.0.0.77 127.0.0.1 40000 443\r\n"[..], tls].concat();
        let (got, used) = read_all(&v1).await;
        assert_eq!(got, Ok(Source::Client("127.0.0.77:40000".parse().unwrap())));
        assert_eq!(used, v1.len() - tls.len());

        let addrs = [[127, 0, 0, 78], [127, 0, 0, 1]].concat();
        let mut body = addrs.clone();
        body.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb]);
        let v2h = v2(1, 0x11, &body);
        let (got, used) = read_all(&[&v2h[..], tls].concat()).await;
        assert_eq!(got, Ok(Source::Client("127.0.0.78:40000".parse().unwrap())));
        assert_eq!(used, v2h.len());

        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 443\r\n";
        assert_eq!(
            read_all(v6).await.0,
            Ok(Source::Client("[2001:db8::1]:1".parse().unwrap()))
        );
    }

    #[tokio::test]
    async fn local_and_unknown_are_the_balancer_itself() {
        assert_eq!(read_all(b"PROXY UNKNOWN\r\n").await.0, Ok(Source::Balancer));
        assert_eq!(read_all(&v2(0, 0, &[])).await.0, Ok(Source::Balancer));
    }

    #[tokio::test]
    async fn refusals_say_why() {
        let hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcdef";
        assert_eq!(read_all(hello).await.0, Err(ProxyError::Missing));
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert_eq!(
            read_all(long.as_bytes()).await.0,
            Err(ProxyError::TooLong(V1_MAX))
        );
        let mut big = v2(1, 0x11, &[]);
        big[14..16].copy_from_slice(&2000u16.to_be_bytes());
        assert!(matches!(
            read_all(&big).await.0,
            Err(ProxyError::TooLong(_))
        ));
        assert_eq!(
            read_all(b"PROXY TCP4 127.0.0").await.0,
            Err(ProxyError::Closed)
        );
        assert!(matches!(
            read_all(b"PROXY TCP4 999.0.0.1 127.0.0.1 1 2\r\n").await.0,
            Err(ProxyError::Malformed(_))
        ));
        assert_eq!(
            read_all(&v2(1, 0x31, &[0; 216])).await.0,
            Err(ProxyError::NotTcp("UNIX socket"))
        );
        let udp = v2(1, 0x12, &[127, 0, 0, 1, 127, 0, 0, 1, 0, 1, 0, 2]);
        assert_eq!(read_all(&udp).await.0, Err(ProxyError::NotTcp("datagram")));
        // A TLV whose length runs past the header, and a TLV cut before its length.
        let addrs = [127, 0, 0, 78, 127, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb];
        let mut whole = addrs.to_vec();
        whole.extend_from_slice(&[0x04, 0x00, 0x03, b'v', b'p', b'c']);
        assert!(read_all(&v2(1, 0x11, &whole)).await.0.is_ok());
        for cut in [&[0x04, 0x00, 0x0a, b'v', b'p', b'c'][..], &[0x04, 0x00][..]] {
            let mut body = addrs.to_vec();
            body.extend_from_slice(cut);
            assert!(
                matches!(
                    read_all(&v2(1, 0x11, &body)).await.0,
                    Err(ProxyError::Malformed(_))
                ),
                "{cut:?}"
            );
        }
    }

    #[test]
    fn spoofed_headers_are_recognised() {
        assert!(looks_like_header(b"PROXY TCP4"));
        assert!(looks_like_header(&V2_SIGNATURE[..8]));
        assert!(!looks_like_header(b"\x16\x03\x01\x02\x00"));
        assert!(!looks_like_header(b"PRO"));
    }
}
