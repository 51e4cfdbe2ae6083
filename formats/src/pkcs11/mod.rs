//! Keys held in a PKCS#11 token (an HSM, a cloud KMS, SoftHSM2): the private key never
//! leaves the token; we hash in-process and the token signs the digest.
//!
//! What it does: loads each module once per process ([`cryptoki`], which keeps
//! `forbid(unsafe_code)` in our crates) and initialises it; finds the token the URI
//! names, logs in with the PIN, finds the private key by `object=`/`id=` (a key that is
//! `CKA_SENSITIVE` and not `CKA_EXTRACTABLE` is what we expect), and reads its public key
//! (RSA modulus and exponent, or the EC point of the public key object beside it).
//! Signing takes a logged-in session from a pool (one per concurrent job; a new one is
//! opened and logged in when none is idle), so jobs sign in parallel on one token.
//!
//! Faults: any error of the token while signing drops that session and every idle one
//! (they are likely dead too), counts the error and fails the job with
//! [`SignError::Unavailable`] (HTTP 503: the client goes to another host). The next job
//! opens a fresh session, finding the slot and logging in again; when even that fails, the
//! module is finalized and initialised again (at most every [`MIN_RESET_INTERVAL`]: some
//! modules, SoftHSM2 among them, only look for tokens at `C_Initialize`), so the server
//! recovers by itself when the token is back. Sessions from before such a reset are
//! forgotten, never closed: their handle numbers may belong to new sessions.
//!
//! Deliberately NOT done: key generation or import (ops do that with the vendor's tools),
//! `CKA_ALWAYS_AUTHENTICATE` keys (a PIN per signature), RSA-PSS and EdDSA.

pub mod uri;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use openssl::bn::BigNum;
use openssl::pkey::{PKey, Public};
use secrecy::SecretString;

pub use self::uri::Pkcs11Uri;
use crate::SignError;

/// Modules loaded and initialised, by path: `C_Initialize` is once per process.
static MODULES: Mutex<BTreeMap<PathBuf, Pkcs11>> = Mutex::new(BTreeMap::new());
/// When each module was last reset (finalized and initialised again).
static RESETS: Mutex<BTreeMap<PathBuf, Instant>> = Mutex::new(BTreeMap::new());
/// Bumped by every module reset: sessions opened before it are stale.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// A module is reset at most this often.
pub const MIN_RESET_INTERVAL: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data behind the lock: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The module at `path`, loaded and initialised once.
fn module(path: &Path) -> Result<Pkcs11, SignError> {
    let mut modules = lock(&MODULES);
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    let shown = path.display();
    let m = Pkcs11::new(path)
        .map_err(|e| SignError::Key(format!("PKCS#11 module {shown}: cannot load: {e}")))?;
    match m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(SignError::Key(format!(
                "PKCS#11 module {shown}: cannot initialise: {e}"
            )))
        }
    }
    modules.insert(path.to_path_buf(), m.clone());
    Ok(m)
}

/// Finalizes and initialises again the module at `path`, unless that was done less than
/// [`MIN_RESET_INTERVAL`] ago. Whether it was done.
fn reset_module(path: &Path) -> bool {
    {
        let mut resets = lock(&RESETS);
        if resets
            .get(path)
            .is_some_and(|t| t.elapsed() < MIN_RESET_INTERVAL)
        {
            return false;
        }
        resets.insert(path.to_path_buf(), Instant::now());
    }
    let modules = lock(&MODULES);
    let Some(m) = modules.get(path) else {
        return false;
    };
    GENERATION.fetch_add(1, Ordering::SeqCst);
    // Errors: the module may already be half gone; initialising again is what matters.
    let _ = m.clone().finalize();
    m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .is_ok()
}

/// Drops `p`, closing its session, unless a module reset made it stale: then its handle
/// may name a new session, so it is forgotten instead (a few bytes, once per reset).
fn discard(p: Pooled) {
    if p.generation == GENERATION.load(Ordering::SeqCst) {
        drop(p);
    } else {
        std::mem::forget(p);
    }
}

/// The type of a token key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKeyType {
    /// RSA: the token signs a DigestInfo with CKM_RSA_PKCS.
    Rsa,
    /// ECDSA: the token signs the digest with CKM_ECDSA (r ‖ s, converted to DER).
    Ec,
}

/// One logged-in session and the key's handle in it.
struct Pooled {
    session: Session,
    key: ObjectHandle,
    /// [`GENERATION`] when it was opened.
    generation: u64,
}

/// How to reach the key: module, URI, PIN.
struct Conn {
    ctx: Pkcs11,
    module: PathBuf,
    uri: Pkcs11Uri,
    /// Kept (zeroized on drop) to log in again after a fault.
    pin: SecretString,
}

/// A private key in a token, with its pool of logged-in sessions.
pub struct TokenKey {
    conn: Conn,
    key_type: TokenKeyType,
    public: PKey<Public>,
    /// Idle sessions; a job takes one and puts it back when it succeeded.
    idle: Mutex<Vec<Pooled>>,
    /// Token errors while signing, for /metrics.
    errors: AtomicU64,
    /// Whether the last use of the token worked, for /health.
    available: AtomicBool,
    /// The last token error (no secret in it), for /health.
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("module", &self.conn.module)
            .field("key", &self.conn.uri.key_name())
            .field("type", &self.key_type)
            .finish_non_exhaustive()
    }
}

/// What /health and /metrics show of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    /// `file` or `pkcs11`.
    pub source: &'static str,
    /// Whether the key could sign the last time it was used.
    pub available: bool,
    /// Token errors since start-up.
    pub errors: u64,
    /// The last error, if the key is not available.
    pub last_error: Option<String>,
}

fn ck(what: &str) -> impl Fn(CkError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl TokenKey {
    /// Loads `module`, logs in to the token `uri` names with `pin`, finds the key and
    /// reads its public key. Errors are [`SignError::Key`] (exit 1 at start-up): a wrong
    /// or locked PIN, no such token or key, a key of an unsupported type.
    pub fn open(module_path: &Path, uri: &Pkcs11Uri, pin: SecretString) -> Result<Self, SignError> {
        let conn = Conn {
            ctx: module(module_path)?,
            module: module_path.to_path_buf(),
            uri: uri.clone(),
            pin,
        };
        let key_err = |m: String| SignError::Key(format!("{}: {m}", uri.key_name()));
        let pooled = conn.open_session().map_err(key_err)?;
        let (key_type, public) = conn.read_public(&pooled).map_err(key_err)?;
        Ok(TokenKey {
            conn,
            key_type,
            public,
            idle: Mutex::new(vec![pooled]),
            errors: AtomicU64::new(0),
            available: AtomicBool::new(true),
            last_error: Mutex::new(None),
        })
    }

    /// The key's type.
    pub fn key_type(&self) -> TokenKeyType {
        self.key_type
    }

    /// The key's public half, as the token reports it.
    pub fn public_key(&self) -> &PKey<Public> {
        &self.public
    }

    /// The key's name for messages (`token=release;object=authenticode-2026`).
    pub fn name(&self) -> String {
        self.conn.uri.key_name()
    }

    /// Signs `data` with `mechanism` on a pooled session. A token error drops the
    /// session (and the idle ones) and is [`SignError::Unavailable`].
    pub fn sign_raw(&self, mechanism: &Mechanism<'_>, data: &[u8]) -> Result<Vec<u8>, SignError> {
        let now = GENERATION.load(Ordering::SeqCst);
        let taken = lock(&self.idle).pop();
        let result = match taken {
            Some(p) if p.generation == now => Ok(p),
            stale => {
                if let Some(p) = stale {
                    discard(p);
                }
                self.conn.open_session().or_else(|e| {
                    // The token may be back behind a module that must look again.
                    if reset_module(&self.conn.module) {
                        self.conn.open_session()
                    } else {
                        Err(e)
                    }
                })
            }
        }
        .and_then(|p| match p.session.sign(mechanism, p.key, data) {
            Ok(sig) => Ok((p, sig)),
            Err(e) => {
                discard(p);
                Err(format!("signing on the token: {e}"))
            }
        });
        match result {
            Ok((p, sig)) => {
                lock(&self.idle).push(p);
                self.available.store(true, Ordering::Relaxed);
                *lock(&self.last_error) = None;
                Ok(sig)
            }
            Err(e) => {
                // Stale sessions would fail the next jobs too: close them all.
                let idle = std::mem::take(&mut *lock(&self.idle));
                idle.into_iter().for_each(discard);
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.available.store(false, Ordering::Relaxed);
                let msg = format!("{}: {e}", self.conn.uri.key_name());
                *lock(&self.last_error) = Some(msg.clone());
                Err(SignError::Unavailable(msg))
            }
        }
    }

    /// The key's state for /health and /metrics.
    pub fn status(&self) -> KeyStatus {
        KeyStatus {
            source: "pkcs11",
            available: self.available.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            last_error: lock(&self.last_error).clone(),
        }
    }
}

impl Conn {
    /// Finds the slot whose token matches the URI: exactly one.
    fn find_slot(&self) -> Result<Slot, String> {
        let u = &self.uri;
        let slots = self
            .ctx
            .get_slots_with_token()
            .map_err(ck("listing the slots"))?;
        let mut found = Vec::new();
        for slot in slots {
            if u.slot_id.is_some_and(|id| id != slot.id()) {
                continue;
            }
            let Ok(info) = self.ctx.get_token_info(slot) else {
                continue;
            };
            let differs = |want: &Option<String>, have: &str| {
                want.as_deref().is_some_and(|w| w != have.trim_end())
            };
            if differs(&u.token, info.label())
                || differs(&u.serial, info.serial_number())
                || differs(&u.manufacturer, info.manufacturer_id())
                || differs(&u.model, info.model())
            {
                continue;
            }
            found.push(slot);
        }
        match found.as_slice() {
            [slot] => Ok(*slot),
            [] => Err(format!(
                "no token {} in module {} (is it plugged in and initialised?)",
                u.token_name(),
                self.module.display()
            )),
            _ => Err(format!(
                "{} tokens match; add token=, serial= or slot-id= to the URI",
                found.len()
            )),
        }
    }

    /// Opens a session on the token, logs in (the login is shared by every session of
    /// the process, so "already logged in" is fine) and finds the private key.
    fn open_session(&self) -> Result<Pooled, String> {
        let generation = GENERATION.load(Ordering::SeqCst);
        let slot = self.find_slot()?;
        let session = self
            .ctx
            .open_ro_session(slot)
            .map_err(ck("opening a session"))?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(format!("wrong PIN for token {}", self.uri.token_name()))
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(format!(
                    "the PIN of token {} is locked (too many wrong PINs)",
                    self.uri.token_name()
                ))
            }
            Err(e) => {
                return Err(format!(
                    "logging in to token {}: {e}",
                    self.uri.token_name()
                ))
            }
        }
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        if let Some(o) = &self.uri.object {
            template.push(Attribute::Label(o.as_bytes().to_vec()));
        }
        if let Some(id) = &self.uri.id {
            template.push(Attribute::Id(id.clone()));
        }
        let keys = session
            .find_objects(&template)
            .map_err(ck("finding the key"))?;
        match keys.as_slice() {
            [key] => Ok(Pooled {
                session,
                key: *key,
                generation,
            }),
            [] => Err("no such private key on the token".into()),
            _ => Err(format!(
                "{} private keys match; add id= or object= to the URI",
                keys.len()
            )),
        }
    }

    /// The key's type and public key: RSA from the private key's modulus and exponent;
    /// EC from the point of the public key object with the same label/id.
    fn read_public(&self, p: &Pooled) -> Result<(TokenKeyType, PKey<Public>), String> {
        let attrs = p
            .session
            .get_attributes(p.key, &[AttributeType::KeyType])
            .map_err(ck("reading the key type"))?;
        let key_type = attrs.iter().find_map(|a| match a {
            Attribute::KeyType(t) => Some(*t),
            _ => None,
        });
        if key_type == Some(KeyType::RSA) {
            let attrs = p
                .session
                .get_attributes(
                    p.key,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )
                .map_err(ck("reading the RSA public key"))?;
            let (mut n, mut e) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    _ => {}
                }
            }
            let (Some(n), Some(e)) = (n, e) else {
                return Err("the token does not show the RSA modulus and exponent".into());
            };
            let rsa = BigNum::from_slice(&n)
                .and_then(|n| Ok((n, BigNum::from_slice(&e)?)))
                .and_then(|(n, e)| openssl::rsa::Rsa::from_public_components(n, e))
                .and_then(PKey::from_rsa)
                .map_err(|e| format!("the token's RSA public key: {e}"))?;
            return Ok((TokenKeyType::Rsa, rsa));
        }
        if key_type != Some(KeyType::EC) {
            return Err(format!(
                "unsupported key type {} (RSA or EC)",
                key_type.map_or("unknown".into(), |t| t.to_string())
            ));
        }
        let mut template = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
        if let Some(o) = &self.uri.object {
            template.push(Attribute::Label(o.as_bytes().to_vec()));
        }
        if let Some(id) = &self.uri.id {
            template.push(Attribute::Id(id.clone()));
        }
        let publics = p
            .session
            .find_objects(&template)
            .map_err(ck("finding the public key"))?;
        let [public] = publics.as_slice() else {
            return Err(format!(
                "an EC key needs exactly one public key object with the same label/id beside it ({} found)",
                publics.len()
            ));
        };
        let attrs = p
            .session
            .get_attributes(*public, &[AttributeType::EcParams, AttributeType::EcPoint])
            .map_err(ck("reading the EC public key"))?;
        let (mut params, mut point) = (None, None);
        for a in attrs {
            match a {
                Attribute::EcParams(v) => params = Some(v),
                Attribute::EcPoint(v) => point = Some(v),
                _ => {}
            }
        }
        let (Some(params), Some(point)) = (params, point) else {
            return Err("the token does not show the EC parameters and point".into());
        };
        Ok((TokenKeyType::Ec, ec_public_key(&params, &point)?))
    }
}

/// An EC public key from `CKA_EC_PARAMS` (a named curve's OID, DER) and `CKA_EC_POINT`
/// (the point, usually wrapped in a DER OCTET STRING).
fn ec_public_key(params: &[u8], point: &[u8]) -> Result<PKey<Public>, String> {
    use der::Decode;
    let oid = der::asn1::ObjectIdentifier::from_der(params)
        .map_err(|e| format!("EC parameters are not a named curve: {e}"))?;
    let nid = match oid.to_string().as_str() {
        "1.2.840.10045.3.1.7" => openssl::nid::Nid::X9_62_PRIME256V1,
        "1.3.132.0.34" => openssl::nid::Nid::SECP384R1,
        "1.3.132.0.35" => openssl::nid::Nid::SECP521R1,
        other => {
            return Err(format!(
                "unsupported EC curve {other} (P-256, P-384, P-521)"
            ))
        }
    };
    let raw = match der::asn1::OctetString::from_der(point) {
        Ok(o) => o.as_bytes().to_vec(),
        Err(_) => point.to_vec(),
    };
    let group = openssl::ec::EcGroup::from_curve_name(nid).map_err(|e| e.to_string())?;
    let mut bn = openssl::bn::BigNumContext::new().map_err(|e| e.to_string())?;
    let p = openssl::ec::EcPoint::from_bytes(&group, &raw, &mut bn)
        .map_err(|e| format!("the token's EC point: {e}"))?;
    openssl::ec::EcKey::from_public_key(&group, &p)
        .and_then(PKey::from_ec_key)
        .map_err(|e| format!("the token's EC public key: {e}"))
}
