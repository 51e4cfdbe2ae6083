//! What the request handlers share: the reloadable configuration snapshot
//! (`Dynamic`, swapped whole on SIGHUP by `reload.rs`), the queue, the store,
//! the metrics and the per-address minting throttle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use formats::Signer;

use crate::config::SecurityConfig;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::store::Store;
use crate::throttle::Throttle;

/// The TCP peer of the connection a request came on (set per connection).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// One servable format.
pub struct FormatEntry {
    /// Its unlocked signer.
    pub signer: Arc<dyn Signer>,
    /// Largest accepted upload.
    pub max_filesize: u64,
    /// `digest_signing = yes` (whether the signer can: `http/digest.rs`).
    pub digest_signing: bool,
    /// `max_rate` / `burst`: how fast this server signs with its key (`rate.rs`).
    pub rate: Option<crate::config::RateLimit>,
    /// The settings the signer was opened with (to tell, on reload, whether it still fits).
    pub config: formats::FormatConfig,
    /// sha256 of the key file when it was unlocked.
    pub key_digest: String,
    /// Its certificate chain's validity, leaf first, as read when the key was
    /// unlocked (the signer keeps signing with that chain); empty for gpg.
    pub certs: Vec<formats::keys::validity::Validity>,
}

/// The part of the configuration that SIGHUP replaces, swapped as a whole.
pub struct Dynamic {
    /// `[security]`.
    pub security: SecurityConfig,
    /// Formats by name.
    pub formats: HashMap<String, Arc<FormatEntry>>,
    /// Format names in config order (for /health).
    pub format_names: Vec<String>,
    /// GET long-poll duration.
    pub long_poll: Duration,
    /// Unused results are removed after this long.
    pub max_file_age: Duration,
    /// How often cleanup runs.
    pub cleanup_interval: Duration,
}

/// Everything handlers share.
pub struct AppState {
    /// The reloadable configuration.
    pub dynamic: RwLock<Arc<Dynamic>>,
    /// The job queue.
    pub queue: Arc<Queue>,
    /// File storage.
    pub store: Store,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Longest silence between two pieces of an upload.
    pub idle_timeout: Duration,
    /// Longest time the form fields before `filedata` may take, all together.
    pub form_timeout: Duration,
    /// `min_upload_rate`, bytes per second (0: none).
    pub min_upload_rate: u64,
    /// `cert_expiry_warning`: /health lists certificates expiring within it.
    pub cert_expiry_warning: Duration,
    /// Failed minting attempts, per source address.
    pub mint_throttle: Throttle,
    /// The last TOTP step each user's code was accepted for (replays refused).
    pub otp_replays: crate::totp::Replays,
    /// Each rate-limited format's token bucket.
    pub rates: Arc<crate::rate::Rates>,
    /// Start time.
    pub started: Instant,
    /// Set on SIGTERM: new uploads are refused, /health says `draining`.
    pub draining: AtomicBool,
}

impl AppState {
    /// The configuration in force now (a snapshot: a reload does not change it under a request).
    pub fn dynamic(&self) -> Arc<Dynamic> {
        self.dynamic
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a new configuration in force.
    pub fn replace_dynamic(&self, d: Dynamic) {
        *self.dynamic.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(d);
    }
}
