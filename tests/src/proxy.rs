//! A fault-injecting TCP proxy for the tests (the "Seism" approach): it sits
//! in front of a REAL server and, per connection, passes the bytes through
//! untouched or breaks them in one of the ways networks and overloaded hosts
//! do. TLS passes through it end to end: the client still checks the real
//! server's certificate, so the proxy can break a conversation but never
//! forge one.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What happens to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetFault {
    /// Bytes flow untouched.
    Pass,
    /// Every chunk is held back this long (a slow network).
    Delay(Duration),
    /// After this many bytes (either direction) nothing more flows, the connection stays open.
    Stall(u64),
    /// After this many bytes (either direction) the connection is reset (RST).
    Reset(u64),
    /// After this many bytes from the server, the client's side is closed cleanly (a truncated answer).
    Truncate(u64),
    /// Accepted and closed at once.
    Close,
    /// Answered by the proxy itself, over TLS with the test server
    /// certificate: `HTTP/1.1 503` + `Retry-After` (see [`crate::busy_peer`]).
    Unavailable,
}

/// A running proxy; stops accepting when dropped.
pub struct Proxy {
    /// `127.0.0.1:PORT` the clients dial.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicU64>,
}

/// Chooses a fault per connection: a fixed seed makes a run reproducible.
pub struct Chaos {
    state: u64,
    /// Percentage of connections left untouched.
    pub pass_percent: u64,
}

impl Chaos {
    /// A chooser with `seed`, passing `pass_percent`% of connections.
    pub fn new(seed: u64, pass_percent: u64) -> Chaos {
        Chaos {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            pass_percent,
        }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// The fault for the next connection.
    pub fn pick(&mut self) -> NetFault {
        let r = self.next() % 100;
        if r < self.pass_percent {
            return NetFault::Pass;
        }
        let at = 200 + self.next() % 40_000;
        match self.next() % 5 {
            0 => NetFault::Delay(Duration::from_millis(20 + self.next() % 200)),
            1 => NetFault::Stall(at),
            2 => NetFault::Reset(at),
            3 => NetFault::Truncate(at),
            _ => NetFault::Close,
        }
    }
}

impl Proxy {
    /// Proxies to `upstream`, asking `choose` for each connection's fault.
    pub fn start(upstream: SocketAddr, choose: impl FnMut() -> NetFault + Send + 'static) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let choose = Arc::new(Mutex::new(choose));
        {
            let (stop, connections) = (stop.clone(), connections.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            connections.fetch_add(1, Ordering::Relaxed);
                            let fault = (choose.lock().expect("lock"))();
                            let stop = stop.clone();
                            std::thread::spawn(move || serve(client, upstream, fault, stop));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Proxy {
            addr,
            stop,
            connections,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One proxied connection's shared state.
struct Link {
    /// Bytes seen in both directions, for the byte-counted faults.
    seen: AtomicU64,
    /// 0 flowing, 1 stalled (nothing forwarded any more), 2 over (both pumps stop).
    state: std::sync::atomic::AtomicU8,
}

fn serve(client: TcpStream, upstream: SocketAddr, fault: NetFault, stop: Arc<AtomicBool>) {
    if fault == NetFault::Close {
        return;
    }
    if fault == NetFault::Unavailable {
        let _ = crate::busy_peer::answer_503(client);
        return;
    }
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let link = Arc::new(Link {
        seen: AtomicU64::new(0),
        state: std::sync::atomic::AtomicU8::new(0),
    });
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let up = {
        let (link, stop) = (link.clone(), stop.clone());
        std::thread::spawn(move || pump(c2, s2, fault, &link, &stop, false))
    };
    pump(server, client, fault, &link, &stop, true);
    let _ = up.join();
}

/// Copies `from` → `to`, applying `fault`; `to_client` tells the direction.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    fault: NetFault,
    link: &Link,
    stop: &AtomicBool,
    to_client: bool,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        let state = link.state.load(Ordering::Relaxed);
        if stop.load(Ordering::Relaxed) || state == 2 {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        if state == 1 {
            // Stalled: swallow, forward nothing, keep the connection open.
            continue;
        }
        let before = link.seen.fetch_add(n as u64, Ordering::Relaxed);
        let limit = match fault {
            NetFault::Stall(at) | NetFault::Reset(at) => Some(at),
            NetFault::Truncate(at) if to_client => Some(at),
            _ => None,
        };
        if let Some(at) = limit {
            if before + n as u64 > at {
                let keep = (at.saturating_sub(before) as usize).min(n);
                let _ = to.write_all(&buf[..keep]);
                match fault {
                    NetFault::Stall(_) => {
                        link.state.store(1, Ordering::Relaxed);
                        continue;
                    }
                    NetFault::Reset(_) => {
                        // With SO_LINGER 0, the last close of each socket sends a RST.
                        let _ = socket_linger_zero(&from);
                        let _ = socket_linger_zero(&to);
                    }
                    _ => {
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    }
                }
                link.state.store(2, Ordering::Relaxed);
                return;
            }
        }
        if let NetFault::Delay(d) = fault {
            std::thread::sleep(d);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    if link.state.load(Ordering::Relaxed) == 0 {
        let _ = to.shutdown(Shutdown::Write);
    }
}

/// SO_LINGER 0, so that closing sends a RST instead of a FIN (std's
/// `set_linger` is not stable; socket2 is already in the tree through tokio).
fn socket_linger_zero(s: &TcpStream) -> std::io::Result<()> {
    socket2::SockRef::from(s).set_linger(Some(Duration::ZERO))
}
