//! A small L4 load balancer for the tests, speaking the PROXY protocol to the
//! servers behind it, as HAProxy with `send-proxy` / `send-proxy-v2` does: it
//! accepts a client, connects to a backend FROM its own address (127.0.0.10:
//! the address the servers list in `proxy_protocol_from`), writes a PROXY
//! header naming the client's address, then copies bytes both ways. TLS
//! passes through end to end.
//!
//! Backends are chosen by source affinity (the client address's last byte
//! modulo the number of backends, like HAProxy's `balance source`): a
//! client's upload and its later fetch reach the same server, which keeps
//! the results.

use std::io::Write;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The balancer's own address towards the servers.
pub const BALANCER_IP: &str = "127.0.0.10";

/// Which PROXY protocol version the balancer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Text: `PROXY TCP4 SRC DST SPORT DPORT\r\n`.
    V1,
    /// Binary, with the 12-byte signature.
    V2,
}

/// The v1 header for a TCP connection from `src` to `dst`.
pub fn v1_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// The v2 header (command PROXY, TCP over IPv4) for a connection from `src` to `dst`.
pub fn v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("the test balancer speaks v2 for IPv4 only");
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&s.octets());
    h.extend_from_slice(&d.octets());
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

/// A TCP connection to `to` from `local_ip`, timeouts 30 s.
pub fn connect_from(to: SocketAddr, local_ip: &str) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let local: SocketAddr = format!("{local_ip}:0").parse().expect("local address");
    sock.bind(&local.into()).expect("bind");
    sock.connect(&to.into()).expect("connect");
    let tcp: TcpStream = sock.into();
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    tcp.set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    tcp
}

/// A running balancer; stops accepting when dropped.
pub struct Balancer {
    /// `https://127.0.0.1:PORT`, what clients dial.
    pub url: String,
    stop: Arc<AtomicBool>,
}

impl Balancer {
    /// Listens on 127.0.0.1 (any free port) in front of `backends` (server URLs).
    pub fn start(backends: &[&str], version: Version) -> Balancer {
        let backends: Vec<SocketAddr> = backends
            .iter()
            .map(|u| u.trim_start_matches("https://").parse().expect("backend"))
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind balancer");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, from)) => {
                            let last = match from.ip() {
                                IpAddr::V4(v4) => usize::from(v4.octets()[3]),
                                IpAddr::V6(_) => 0,
                            };
                            let backend = backends[last % backends.len()];
                            std::thread::spawn(move || forward(client, from, backend, version));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Balancer {
            url: format!("https://{addr}"),
            stop,
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn forward(client: TcpStream, from: SocketAddr, backend: SocketAddr, version: Version) {
    let _ = client.set_nonblocking(false);
    let mut server = connect_from(backend, BALANCER_IP);
    let header = match version {
        Version::V1 => v1_header(from, backend),
        Version::V2 => v2_header(from, backend),
    };
    if server.write_all(&header).is_err() {
        return;
    }
    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let _ = server.set_read_timeout(None);
    let _ = c2.set_read_timeout(None);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
        let _ = s2.shutdown(Shutdown::Write);
    });
    let mut client = client;
    let _ = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(Shutdown::Write);
    let _ = up.join();
}
