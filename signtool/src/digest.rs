//! Digest signing on the client (issue 16): for a format a host signs by
//! digest (its /health says `digest_signing` and how), compute what the
//! signature covers with the same `formats` code the server uses, send only
//! that (`POST /digest/FORMAT`), check the signature that comes back, and
//! build the output beside its destination. The file never leaves the machine.
//!
//! - gpg: the SHA-256 state after the file (kept from the hash every file
//!   gets anyway, so the file is read once); the armoured signature is
//!   checked to cover that state ([`formats::gpg::check_from_state`]).
//! - mar: the signed MAR is written to a temp file with a placeholder, its
//!   digest sent; the signature must verify with the public key the server
//!   sent before it is written over the placeholder.
//! - authenticode: the container is told from the content, as the server
//!   does; a PE is copied to a temp file while its image hash is computed,
//!   an MSI or a cabinet (if the host's /health lists `msi`, `cab` in
//!   `digest_containers`) is copied without its signature and hashed; the
//!   SignedData must be over that kind of file, carry that hash, verify
//!   with the certificate it embeds and its timestamp must stamp it, before
//!   it is appended (PE, the CheckSum fixed), written as the MSI's
//!   `DigitalSignature` stream or after the cabinet's data. Catalogs and
//!   scripts are uploaded.
//!
//! What was prepared is kept across hosts (a host that fails costs no second
//! pass over the file) unless the next host asks for another spec.

use std::path::Path;

use formats::authenticode::remote as authenticode;
use formats::digest_signing::{DigestSpec, Sha256State};
use formats::mar::digest as mar;
use tempfile::TempPath;

use crate::log;
use crate::session::{self, describe, retry, Hashes, Session, Signed, TryError};

/// Largest signature material accepted from a server.
const MAX_REPLY: usize = 1 << 20;

/// What was computed for one spec.
pub(crate) enum Prepared {
    /// gpg: the state after the file.
    Gpg(Sha256State),
    /// mar: the signed MAR with its placeholder, and its digest.
    Mar {
        spec: DigestSpec,
        prep: mar::Prepared,
        temp: TempPath,
    },
    /// authenticode: the PE, MSI or cabinet copied for its signature, and its hash.
    Authenticode {
        spec: DigestSpec,
        prep: authenticode::Prepared,
        temp: TempPath,
    },
}

impl Prepared {
    /// Whether what was prepared is what `spec` asks for: the same spec, or
    /// for authenticode the same hash and a container the host signs (a PE
    /// prepared for one host serves a host that signs PEs only).
    fn fits(&self, spec: DigestSpec) -> bool {
        match (self, spec) {
            (Prepared::Gpg(_), DigestSpec::Sha256State) => true,
            (Prepared::Mar { spec: mine, .. }, _) => *mine == spec,
            (
                Prepared::Authenticode {
                    spec: DigestSpec::Authenticode { hash: mine, .. },
                    prep,
                    ..
                },
                DigestSpec::Authenticode { hash, containers },
            ) => *mine == hash && containers.contains(prep.container()),
            _ => false,
        }
    }

    /// The request's digest fields.
    fn fields(&self) -> Vec<(&'static str, String)> {
        match self {
            Prepared::Gpg(state) => vec![
                ("sha256_state", hex::encode(state.words())),
                ("length", state.length().to_string()),
                ("tail", hex::encode(state.tail())),
            ],
            Prepared::Mar { prep, .. } => vec![("digest", hex::encode(&prep.digest))],
            Prepared::Authenticode { prep, .. } => {
                let input = prep.input();
                let mut fields = vec![("digest", hex::encode(&prep.digest))];
                fields.extend(input.container().map(|c| ("container", c.to_string())));
                fields
            }
        }
    }
}

/// Where one request goes and what it is about.
pub(crate) struct On<'a> {
    pub url: &'a str,
    pub format: &'a str,
    pub label: &'a str,
    pub out_dir: &'a Path,
}

fn local(e: impl std::fmt::Display) -> TryError {
    TryError::Local(e.to_string())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, formats::SignError> + Send + 'static,
) -> Result<T, TryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(local)?
        .map_err(|e| TryError::Local(e.to_string()))
}

/// What `spec` asks for, computed from `input`; `None`: this file is not
/// signed by digest (an Authenticode container other than PE or MSI, or an
/// MSI for a host that signs only PEs by digest).
async fn prepare(
    spec: DigestSpec,
    input: &Path,
    hashes: Option<&Hashes>,
    on: &On<'_>,
) -> Result<Option<Prepared>, TryError> {
    match spec {
        DigestSpec::Sha256State => match hashes.and_then(|h| h.state.as_ref()) {
            Some(state) => Ok(Some(Prepared::Gpg(state.clone()))),
            None => {
                let input = input.to_path_buf();
                let state = blocking(move || {
                    formats::digest_signing::sha256_state_of(&input).map_err(Into::into)
                })
                .await?;
                Ok(Some(Prepared::Gpg(state)))
            }
        },
        DigestSpec::Mar { .. } => {
            let (input, temp) = (input.to_path_buf(), empty_temp(on)?);
            let path = temp.to_path_buf();
            let prep = blocking(move || mar::prepare(&input, &path, spec)).await?;
            Ok(Some(Prepared::Mar { spec, prep, temp }))
        }
        DigestSpec::Authenticode { .. } => {
            let (input, temp) = (input.to_path_buf(), empty_temp(on)?);
            let (path, label) = (temp.to_path_buf(), on.label.to_string());
            let prep = blocking(move || authenticode::prepare(&input, &path, spec, &label)).await?;
            Ok(prep.map(|prep| Prepared::Authenticode { spec, prep, temp }))
        }
    }
}

/// A temp file name beside the destination, the file itself removed: the
/// formats' `prepare` creates its output anew (`create_new`).
fn empty_temp(on: &On<'_>) -> Result<TempPath, TryError> {
    let (file, temp) = session::temp_in(on.out_dir, on.label).map_err(|e| {
        TryError::Local(format!(
            "cannot create a temp file in {}: {e}",
            on.out_dir.display()
        ))
    })?;
    drop(file);
    std::fs::remove_file(&temp).map_err(local)?;
    Ok(temp)
}

/// One try on one host. `Ok(None)`: upload instead, because the host no
/// longer signs this format by digest (its config changed since its /health
/// was read) or does not sign this file's container by digest.
pub(crate) async fn sign(
    s: &Session,
    on: &On<'_>,
    spec: DigestSpec,
    input: &Path,
    hashes: Option<&Hashes>,
    prepared: &mut Option<Prepared>,
) -> Result<Option<Signed>, TryError> {
    let tag = hashes.map_or(on.label, |h| h.sha256.as_str());
    if !prepared.as_ref().is_some_and(|p| p.fits(spec)) {
        *prepared = None;
        match prepare(spec, input, hashes, on).await? {
            Some(p) => *prepared = Some(p),
            None => {
                log::info(format!(
                    "{tag}: {} does not sign this kind of {} file by digest (only {})",
                    on.url,
                    on.format,
                    spec.containers()
                        .map(|c| c.names())
                        .unwrap_or_default()
                        .join(", ")
                ));
                return Ok(None);
            }
        }
    }
    let Some(prep) = prepared.as_ref() else {
        return Err(TryError::Local("nothing prepared".into()));
    };
    let mut form = vec![
        ("token", s.token.clone()),
        ("filename", on.label.to_string()),
    ];
    form.extend(prep.fields());
    let target = format!("{}/digest/{}", on.url, on.format);
    log::debug(format!("{tag}: POST {target} (digest signing)"));
    let send = s
        .client
        .post(&target)
        .form(&form)
        .timeout(s.read_timeout.min(s.remaining()))
        .send();
    let r = send.await.map_err(|e| retry(describe(&e)))?;
    match r.status().as_u16() {
        200 => {}
        403 => {
            let msg = session::message(r).await;
            if msg.contains("does not allow digest signing") {
                log::info(format!(
                    "{tag}: {} no longer signs {} by digest",
                    on.url, on.format
                ));
                return Ok(None);
            }
            return Err(TryError::Fatal(format!("403 {msg}")));
        }
        _ => return Err(session::refusal(r).await),
    }
    let public_key = r
        .headers()
        .get("x-public-key")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(v).ok()
        });
    let log_index = crate::transparency::index_header(r.headers());
    let body = read_body(r).await?;
    let released = crate::transparency::Released {
        index: log_index,
        sha256: {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&body))
        },
    };
    let Some(prep) = prepared.take() else {
        return Err(TryError::Local("nothing prepared".into()));
    };
    match finish(prep, &body, public_key.as_deref(), on).await {
        Ok(signed) => Ok(Some(Signed {
            released: Some(released),
            ..signed
        })),
        Err((kept, e)) => {
            *prepared = kept;
            Err(e)
        }
    }
}

async fn read_body(mut r: reqwest::Response) -> Result<Vec<u8>, TryError> {
    let mut body = Vec::new();
    while let Some(piece) = r.chunk().await.map_err(|e| retry(describe(&e)))? {
        if body.len() + piece.len() > MAX_REPLY {
            return Err(retry(format!(
                "the signature is over {MAX_REPLY} bytes: not a signature"
            )));
        }
        body.extend_from_slice(&piece);
    }
    Ok(body)
}

/// Checks the signature, then builds the output in a temp file beside its
/// destination. A signature that does not check hands `prep` back, for the next host.
async fn finish(
    prep: Prepared,
    sig: &[u8],
    public_key: Option<&[u8]>,
    on: &On<'_>,
) -> Result<Signed, (Option<Prepared>, TryError)> {
    let bad = |e: formats::SignError| retry(format!("{e}; not written"));
    match prep {
        Prepared::Gpg(state) => {
            if let Err(e) = formats::gpg::check_from_state(sig, &state) {
                return Err((Some(Prepared::Gpg(state)), bad(e)));
            }
            let written = write_temp(on, sig).await;
            written.map_err(|e| (Some(Prepared::Gpg(state)), e))
        }
        Prepared::Mar { spec, prep, temp } => {
            let Some(key) = public_key else {
                let e = retry(
                    "the server sent no X-Public-Key to check the MAR signature with; not written",
                );
                return Err((Some(Prepared::Mar { spec, prep, temp }), e));
            };
            if let Err(e) = mar::verify(&prep, sig, key) {
                return Err((Some(Prepared::Mar { spec, prep, temp }), bad(e)));
            }
            let (path, sig) = (temp.to_path_buf(), sig.to_vec());
            blocking(move || mar::finish(&path, &prep, &sig))
                .await
                .map_err(|e| (None, e))?;
            // Hashed only if a next format or the cache needs it.
            Ok(Signed {
                temp,
                hashes: None,
                released: None,
            })
        }
        Prepared::Authenticode { spec, prep, temp } => {
            if let Err(e) = authenticode::verify(&prep, sig) {
                return Err((Some(Prepared::Authenticode { spec, prep, temp }), bad(e)));
            }
            let (path, sig) = (temp.to_path_buf(), sig.to_vec());
            blocking(move || authenticode::finish(&path, prep, &sig))
                .await
                .map_err(|e| (None, e))?;
            // Hashed only if a next format or the cache needs it.
            Ok(Signed {
                temp,
                hashes: None,
                released: None,
            })
        }
    }
}

/// The signature in a fsynced temp file in `on.out_dir`.
async fn write_temp(on: &On<'_>, bytes: &[u8]) -> Result<Signed, TryError> {
    use std::io::Write as _;
    let (mut file, temp) = session::temp_in(on.out_dir, on.label).map_err(|e| {
        TryError::Local(format!(
            "cannot create a temp file in {}: {e}",
            on.out_dir.display()
        ))
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(local)?;
    drop(file);
    let hashes = session::hash_file(&temp).await.map_err(local)?;
    Ok(Signed {
        temp,
        hashes: Some(hashes),
        released: None,
    })
}
