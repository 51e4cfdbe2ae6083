//! The signing server: config → passphrases → probes → HTTPS.
//!
//! Start-up order matters: the config is checked (exit 2), then every key is
//! unlocked and probed (exit 1, naming the format), and only then is the
//! port bound. See docs/ARCHITECTURE.md.

pub mod approval;
pub mod audit;
pub mod auth;
pub mod clean;
pub mod config;
pub mod conn;
pub mod expiry;
pub mod form;
#[doc(hidden)]
pub mod fuzzing;
pub mod hardening;
pub mod http;
mod logbridge;
pub mod metrics;
pub mod outcome;
pub mod passphrase;
pub mod proxy;
pub mod queue;
pub mod rate;
pub mod reload;
pub mod server;
pub mod stall;
pub mod state;
pub mod store;
pub mod throttle;
pub mod tlog;
pub mod token_keys;
pub mod totp;
