//! Who may hold a connection, decided at accept, before the TLS handshake:
//! a peer in neither `allowed_ips` nor `new_token_allowed_ips` is closed at
//! once, and every peer may hold at most `max_connections_per_ip` connections
//! out of `max_connections` in all. A held place is given back when its
//! [`Admitted`] guard drops with the connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The peer is in no allow-list.
    NotAllowed,
    /// The peer already holds `max_connections_per_ip`.
    PeerLimit,
    /// The server holds `max_connections`.
    TotalLimit,
}

impl Closed {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Closed::NotAllowed => "ip_not_allowed",
            Closed::PeerLimit => "peer_connection_limit",
            Closed::TotalLimit => "connection_limit",
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
