//! Who may hold a connection, decided at accept, before the TLS handshake:
//! a peer in neither `allowed_ips` nor `new_token_allowed_ips` is closed at
//! once, and every peer may hold at most `max_connections_per_ip` connections
//! out of `max_connections` in all. A held place is given back when its
//! [`Admitted`] guard drops with the connection.
//!
//! A connection from a load balancer listed in `proxy_protocol_from` is
//! judged on the client address its PROXY header carries ([`arrive`]): the
//! balancer may hold up to `max_connections` while headers are read (within
//! [`PROXY_HEADER_TIMEOUT`]), then each connection takes its client's place.
//! A PROXY header from any other peer is refused: nobody else may say who
//! they are.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::TcpStream;

use crate::auth;
use crate::config::SecurityConfig;
use crate::proxy::{self, Source};

/// How long a balancer has to send its PROXY header.
pub const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The peer is in no allow-list.
    NotAllowed,
    /// The peer already holds `max_connections_per_ip`.
    PeerLimit,
    /// The server holds `max_connections`.
    TotalLimit,
    /// A listed balancer sent no valid PROXY header in time.
    ProxyHeader,
    /// A peer not listed in `proxy_protocol_from` sent a PROXY header.
    ProxyNotAllowed,
}

impl Closed {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Closed::NotAllowed => "ip_not_allowed",
            Closed::PeerLimit => "peer_connection_limit",
            Closed::TotalLimit => "connection_limit",
            Closed::ProxyHeader => "proxy_header",
            Closed::ProxyNotAllowed => "proxy_not_allowed",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The connection counts.
#[derive(Debug, Default)]
pub struct Admission {
    counts: Mutex<Counts>,
}

/// A connection's place; given back on drop.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    /// Takes a place for a connection from `ip`, or says why not.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<Admitted, Closed> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= max_total {
            return Err(Closed::TotalLimit);
        }
        let held = c.per_ip.entry(ip).or_insert(0);
        if *held >= max_per_ip {
            return Err(Closed::PeerLimit);
        }
        *held += 1;
        c.total += 1;
        Ok(Admitted {
            admission: self.clone(),
            ip,
        })
    }

    /// Connections held now, in all.
    pub fn total(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// The connection limits and the balancers, from `[server]`.
#[derive(Debug, Clone)]
pub struct Door {
    /// `max_connections`.
    pub max_total: usize,
    /// `max_connections_per_ip`.
    pub max_per_ip: usize,
    /// `proxy_protocol_from`.
    pub balancers: Vec<IpNet>,
}

fn in_lists(sec: &SecurityConfig, ip: IpAddr) -> bool {
    auth::ip_allowed(&sec.allowed_ips, ip) || auth::ip_allowed(&sec.new_token_allowed_ips, ip)
}

impl Door {
    /// At accept: a place for a peer in an allow-list, or for a balancer
    /// (whose clients are judged once their header is read, by [`Door::arrive`]).
    pub fn admit(
        &self,
        admission: &Arc<Admission>,
        sec: &SecurityConfig,
        peer: IpAddr,
    ) -> Result<Admitted, Closed> {
        if auth::ip_allowed(&self.balancers, peer) {
            admission.admit(peer, self.max_total, self.max_total)
        } else if in_lists(sec, peer) {
            admission.admit(peer, self.max_total, self.max_per_ip)
        } else {
            Err(Closed::NotAllowed)
        }
    }

    /// Before TLS: from a balancer, reads its PROXY header and returns the
    /// client it names with the client's own place (the balancer's is given
    /// back); from anyone else, refuses a PROXY header and keeps `peer`.
    /// The allow-lists (`dynamic`) are read after the header, so a reload in between counts.
    pub async fn arrive(
        &self,
        admission: &Arc<Admission>,
        dynamic: impl FnOnce() -> Arc<crate::state::Dynamic>,
        tcp: &mut TcpStream,
        peer: SocketAddr,
        place: Admitted,
        deadline: tokio::time::Instant,
    ) -> Result<(SocketAddr, Admitted), (Closed, String)> {
        let ip = auth::canonical(peer.ip());
        if !auth::ip_allowed(&self.balancers, ip) {
            // A header where a TLS ClientHello should be: someone claiming to
            // speak for another address. (Peeking costs nothing: the handshake
            // reads these bytes next anyway.)
            let mut first = [0u8; 12];
            if let Ok(Ok(n)) = tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
                if proxy::looks_like_header(first.get(..n).unwrap_or_default()) {
                    return Err((
                        Closed::ProxyNotAllowed,
                        "PROXY protocol header from an address not in proxy_protocol_from".into(),
                    ));
                }
            }
            return Ok((peer, place));
        }
        let header = tokio::time::timeout(PROXY_HEADER_TIMEOUT, proxy::read(tcp)).await;
        let source = match header {
            Ok(Ok(source)) => source,
            Ok(Err(e)) => return Err((Closed::ProxyHeader, e.to_string())),
            Err(_) => {
                return Err((
                    Closed::ProxyHeader,
                    format!(
                        "no PROXY protocol header within {} s",
                        PROXY_HEADER_TIMEOUT.as_secs()
                    ),
                ))
            }
        };
        let client = match source {
            Source::Client(addr) => addr,
            Source::Balancer => peer,
        };
        let client_ip = auth::canonical(client.ip());
        if !in_lists(&dynamic().security, client_ip) {
            return Err((
                Closed::NotAllowed,
                format!("client {client_ip} (via balancer {ip}) is in no allow-list"),
            ));
        }
        let own = admission
            .admit(client_ip, self.max_total, self.max_per_ip)
            .map_err(|c| (c, format!("client {client_ip} (via balancer {ip})")))?;
        drop(place);
        Ok((client, own))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut c = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_per_peer_and_in_all_and_given_back() {
        let a = Arc::new(Admission::default());
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let held: Vec<_> = (0..2).map(|_| a.admit(x, 3, 2).unwrap()).collect();
        assert_eq!(a.admit(x, 3, 2).unwrap_err(), Closed::PeerLimit);
        let third = a.admit(y, 3, 2).unwrap();
        assert_eq!(a.admit(y, 3, 2).unwrap_err(), Closed::TotalLimit);
        drop(held);
        assert_eq!(a.total(), 1);
        assert!(a.admit(x, 3, 2).is_ok());
        drop(third);
        assert!(a.counts.lock().unwrap().per_ip.len() <= 1);
    }
}
