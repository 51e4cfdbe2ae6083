//! Digest signing (issue 16): the client computes what a format's signature
//! covers, sends only that, and builds the output itself from the signature
//! the server returns. The server never sees the file.
//!
//! Each format that can do it has its two halves here or in its own module,
//! so that the client (signtool) and the server run the same code:
//! - gpg: the client sends the SHA-256 state after the file ([`Sha256State`]);
//!   the server hashes its own signature fields and trailer after it and
//!   returns the armoured signature ([`crate::gpg::check_from_state`] checks it on the client);
//! - mar: [`crate::mar::digest`] writes the signed MAR with a placeholder and
//!   hashes what the signature covers; the server signs that digest; the
//!   client writes the signature over the placeholder;
//! - authenticode: [`crate::authenticode::remote`] tells the container from
//!   the content and prepares it with the server's own code (a PE, an MSI or
//!   a cabinet copied without its signature and hashed); the request names
//!   the container ([`Container`]: `pe`, the default, `msi` or `cab`) so
//!   that the server's timestamped PKCS#7 SignedData says what the hash is
//!   of; the client writes it where the container keeps its signature.
//!
//! Deliberately NOT done here: anything about HTTP or tokens (the server's
//! `http/digest.rs`), and no signer accepts a digest unless its format says
//! `digest_signing = yes` (the server checks that before calling it).

pub mod sha256;
#[cfg(test)]
mod tests;

pub use sha256::Sha256State;

/// What a client computes for a format that signs digests (told in /health).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestSpec {
    /// gpg: the SHA-256 state after every byte of the file, not finalized.
    Sha256State,
    /// mar: the digest of the signed MAR as [`crate::mar::digest::prepare`]
    /// writes it, for a signature of `signature_len` bytes with algorithm id
    /// `algorithm` (1: SHA-1, 2: SHA-384).
    Mar {
        /// The MAR signature algorithm id.
        algorithm: u32,
        /// The signature's length in bytes (the RSA modulus size).
        signature_len: u32,
    },
    /// authenticode: the Authenticode hash with `hash` of a file of one of
    /// `containers`, as [`crate::authenticode::remote::prepare`] computes it.
    Authenticode {
        /// The hash's algorithm (sha256, sha384, sha512).
        hash: crate::Hash,
        /// The containers the host signs by digest (/health's
        /// `digest_containers`; the text form does not carry them, so that
        /// clients that parse only it keep signing PEs by digest).
        containers: Containers,
    },
}

/// An Authenticode container a hash may be of: the request's `container`
/// field, and the names in /health's `digest_containers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// A PE image (the default: older clients send no `container`).
    Pe,
    /// A Windows Installer package (an OLE compound file).
    Msi,
    /// A cabinet.
    Cab,
}

impl Container {
    /// Every container this build signs by digest, in /health's order.
    pub const ALL: [Container; 3] = [Container::Pe, Container::Msi, Container::Cab];

    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Container::Pe => "pe",
            Container::Msi => "msi",
            Container::Cab => "cab",
        }
    }

    /// The container named `name` (`None`: unknown to this build).
    pub fn parse(name: &str) -> Option<Container> {
        Container::ALL.into_iter().find(|c| c.name() == name)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of [`Container`]s, PE always among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Containers(u8);

impl Containers {
    /// PE only: what a server signs whose /health lists no containers.
    pub const PE: Containers = Containers(1);

    /// Every container this build signs by digest.
    pub fn all() -> Containers {
        Containers(Container::ALL.iter().fold(0, |set, c| set | c.bit()))
    }

    /// The ones of `names` this build knows, and PE.
    pub fn from_names(names: &[&str]) -> Containers {
        let set = names
            .iter()
            .filter_map(|n| Container::parse(n))
            .fold(Containers::PE.0, |set, c| set | c.bit());
        Containers(set)
    }

    /// Whether `c` is in the set.
    pub fn contains(self, c: Container) -> bool {
        self.0 & c.bit() != 0
    }

    /// The names, in /health's order.
    pub fn names(self) -> Vec<&'static str> {
        Container::ALL
            .into_iter()
            .filter(|c| self.contains(*c))
            .map(Container::name)
            .collect()
    }
}

impl DigestSpec {
    /// The text form /health carries: `sha256_state`, `mar:ALGORITHM:LENGTH`.
    pub fn to_text(self) -> String {
        match self {
            DigestSpec::Sha256State => "sha256_state".into(),
            DigestSpec::Mar {
                algorithm,
                signature_len,
            } => format!("mar:{algorithm}:{signature_len}"),
            DigestSpec::Authenticode { hash, .. } => format!("authenticode:{}", hash_name(hash)),
        }
    }

    /// The Authenticode containers signed by digest, as /health's
    /// `digest_containers` lists them (`None` for other formats).
    pub fn containers(self) -> Option<Containers> {
        match self {
            DigestSpec::Authenticode { containers, .. } => Some(containers),
            DigestSpec::Sha256State | DigestSpec::Mar { .. } => None,
        }
    }

    /// This spec with the containers /health's `digest_containers` lists
    /// (`None`: an older server, which signs PEs only).
    pub fn with_containers(self, listed: Option<&[&str]>) -> Self {
        match self {
            DigestSpec::Authenticode { hash, .. } => DigestSpec::Authenticode {
                hash,
                containers: listed.map_or(Containers::PE, Containers::from_names),
            },
            other => other,
        }
    }

    /// Parses [`DigestSpec::to_text`]; `None` for what this build does not
    /// know. An Authenticode spec signs PEs only until
    /// [`DigestSpec::with_containers`] says more.
    pub fn parse(text: &str) -> Option<DigestSpec> {
        let mut parts = text.split(':');
        match (parts.next()?, parts.next(), parts.next(), parts.next()) {
            ("sha256_state", None, None, None) => Some(DigestSpec::Sha256State),
            ("mar", Some(a), Some(l), None) => Some(DigestSpec::Mar {
                algorithm: a.parse().ok()?,
                signature_len: l.parse().ok()?,
            }),
            ("authenticode", Some(h), None, None) => Some(DigestSpec::Authenticode {
                containers: Containers::PE,
                hash: match h {
                    "sha256" => crate::Hash::Sha256,
                    "sha384" => crate::Hash::Sha384,
                    "sha512" => crate::Hash::Sha512,
                    _ => return None,
                },
            }),
            _ => None,
        }
    }

    /// The length of the digest a request must carry (None: a SHA-256 state).
    pub fn digest_len(self) -> Option<usize> {
        match self {
            DigestSpec::Sha256State => None,
            DigestSpec::Mar { algorithm: 1, .. } => Some(20),
            DigestSpec::Mar { .. } => Some(48),
            DigestSpec::Authenticode { hash, .. } => Some(match hash {
                crate::Hash::Sha1 => 20,
                crate::Hash::Sha256 => 32,
                crate::Hash::Sha384 => 48,
                crate::Hash::Sha512 => 64,
            }),
        }
    }
}

fn hash_name(hash: crate::Hash) -> &'static str {
    match hash {
        crate::Hash::Sha1 => "sha1",
        crate::Hash::Sha256 => "sha256",
        crate::Hash::Sha384 => "sha384",
        crate::Hash::Sha512 => "sha512",
    }
}

/// What a digest-signing request carries, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestInput {
    /// gpg: the SHA-256 state after the file.
    Sha256State(Sha256State),
    /// mar, authenticode (a PE's): the digest the signature covers.
    Digest(Vec<u8>),
    /// authenticode: the hash of a container other than PE (the request's
    /// `container`), which the signature covers.
    Authenticode(Container, Vec<u8>),
}

impl DigestInput {
    /// A request's `digest` for the container its `container` field names
    /// (`None`: the field is absent, `pe`); only Authenticode specs know containers.
    pub fn for_container(
        spec: DigestSpec,
        container: Option<&str>,
        digest: Vec<u8>,
    ) -> Result<DigestInput, String> {
        let Some(name) = container else {
            return Ok(DigestInput::Digest(digest));
        };
        let Some(known) = spec.containers() else {
            return Err("container is for authenticode formats only".into());
        };
        match Container::parse(name).filter(|c| known.contains(*c)) {
            Some(Container::Pe) => Ok(DigestInput::Digest(digest)),
            Some(c) => Ok(DigestInput::Authenticode(c, digest)),
            None => Err(format!(
                "container {name:?} is not signed by digest here (only {})",
                known.names().join(", ")
            )),
        }
    }

    /// The request's `container` field for this input (`None`: none is sent).
    pub fn container(&self) -> Option<&'static str> {
        match self {
            DigestInput::Authenticode(c, _) => Some(c.name()),
            DigestInput::Sha256State(_) | DigestInput::Digest(_) => None,
        }
    }

    /// Whether this is what `spec` asks for; the message says what is wrong.
    pub fn check(&self, spec: DigestSpec) -> Result<(), String> {
        if let DigestInput::Authenticode(c, _) = self {
            if !spec.containers().is_some_and(|known| known.contains(*c)) {
                return Err(format!(
                    "this format does not sign {} hashes by digest",
                    c.name()
                ));
            }
        }
        match (self, spec.digest_len()) {
            (DigestInput::Sha256State(_), None) => Ok(()),
            (DigestInput::Digest(d) | DigestInput::Authenticode(_, d), Some(n)) if d.len() == n => {
                Ok(())
            }
            (DigestInput::Digest(d) | DigestInput::Authenticode(_, d), Some(n)) => Err(format!(
                "the digest must be {n} bytes ({} hex digits), not {}",
                n * 2,
                d.len()
            )),
            (DigestInput::Digest(_) | DigestInput::Authenticode(..), None) => Err(
                "this format signs a SHA-256 state (sha256_state, length, tail), not a digest"
                    .into(),
            ),
            (DigestInput::Sha256State(_), Some(_)) => {
                Err("this format signs a digest, not a SHA-256 state".into())
            }
        }
    }

    /// A public summary for the audit log: the file's SHA-256 (a state is
    /// finished for it), or the digest, hex.
    pub fn audit_digest(&self) -> String {
        match self {
            DigestInput::Sha256State(s) => hex::encode(s.clone().finish()),
            DigestInput::Digest(d) | DigestInput::Authenticode(_, d) => hex::encode(d),
        }
    }
}

/// The SHA-256 state of a whole file, read in 1 MiB pieces.
pub fn sha256_state_of(path: &std::path::Path) -> std::io::Result<Sha256State> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let mut state = Sha256State::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(state);
        }
        state.absorb(buf.get(..n).unwrap_or_default());
    }
}
