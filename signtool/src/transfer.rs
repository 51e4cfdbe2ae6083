//! One file, one format, against the hosts of that format: GET the result,
//! upload on a plain 404, long-poll while pending, and stream a 200's body to
//! a temp file while hashing it; the temp file is handed back only when its
//! digest equals the server's `X-SHA256-Digest` (or `X-SHA1-Digest`).
//!
//! Uploads stream from disk (memory stays flat in file size). Failover
//! follows the answer: connection errors, timeouts, TLS errors, 5xx and bad
//! digests rotate to the next host after a backoff; a 429 (a format's rate)
//! is waited out on the same host without counting an error; other 4xx
//! answers, which another host would repeat, fail the file at once. This module never writes to a
//! destination: `sign.rs` renames the verified temp file into place.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use formats::digest_signing::DigestSpec;

use crate::log;
use crate::session::{
    describe, hash_file, message, refusal, retry, temp_in, Failure, Hashes, Session, Signed,
    TryError,
};
use crate::upload::{self, Digest::After, Digest::Before};

/// What one host did about one request.
enum Answer {
    Done(Signed),
    Pending,
    Unknown,
    /// 500: signing failed there and the server forgot the input; what it
    /// said. Uploading again (there or elsewhere) may succeed.
    Failed(String),
}

async fn get(
    s: &Session,
    url: &str,
    format: &str,
    hashes: &Hashes,
    out_dir: &Path,
    name: &str,
) -> Result<Answer, TryError> {
    let target = format!("{url}/sign/{format}/{}", hashes.sha256);
    log::debug(format!("{}: GET {target}", hashes.sha256));
    let send = s.client.get(&target).timeout(s.remaining()).send();
    let r = match tokio::time::timeout(s.read_timeout, send).await {
        Ok(r) => r.map_err(|e| retry(describe(&e)))?,
        Err(_) => {
            return Err(retry(format!(
                "timed out: no answer in {} s (--read-timeout)",
                s.read_timeout.as_secs_f64()
            )))
        }
    };
    match r.status().as_u16() {
        200 => download(r, out_dir, name, s.read_timeout).await,
        404 if r.headers().contains_key("x-pending") => Ok(Answer::Pending),
        404 => Ok(Answer::Unknown),
        500 => Ok(Answer::Failed(
            format!("500 {}", message(r).await).trim_end().to_string(),
        )),
        _ => Err(refusal(r).await),
    }
}

async fn download(
    r: reqwest::Response,
    out_dir: &Path,
    name: &str,
    idle: Duration,
) -> Result<Answer, TryError> {
    let header = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase())
    };
    let (want256, want1) = (header("x-sha256-digest"), header("x-sha1-digest"));
    let log_index = crate::transparency::index_header(r.headers());
    if want256.is_none() && want1.is_none() {
        return Err(retry(
            "200 without X-SHA256-Digest or X-SHA1-Digest: cannot verify the result; not written",
        ));
    }
    let (file, temp) = temp_in(out_dir, name).map_err(|e| {
        TryError::Local(format!(
            "cannot create a temp file in {}: {e}",
            out_dir.display()
        ))
    })?;
    let local =
        |e: std::io::Error| TryError::Local(format!("cannot write {}: {e}", temp_display(out_dir)));
    let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(file));
    // SHA-1 only for an older server that sends no X-SHA256-Digest.
    let (mut h1, mut h256, mut size) = (want256.is_none().then(Sha1::new), Sha256::new(), 0u64);
    let mut body = r.bytes_stream();
    loop {
        let chunk = match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(chunk)) => chunk.map_err(|e| retry(describe(&e)))?,
            Ok(None) => break,
            Err(_) => {
                return Err(retry(format!(
                    "timed out: the body stalled for {} s (--read-timeout)",
                    idle.as_secs_f64()
                )))
            }
        };
        if let Some(h1) = &mut h1 {
            h1.update(&chunk);
        }
        h256.update(&chunk);
        size += chunk.len() as u64;
        out.write_all(&chunk).await.map_err(local)?;
    }
    out.flush().await.map_err(local)?;
    let sha1 = h1.map(|h| hex::encode(h.finalize())).unwrap_or_default();
    let hashes = Hashes {
        sha256: hex::encode(h256.finalize()),
        size,
        state: None,
    };
    let (name, want, got) = match (&want256, &want1) {
        (Some(w), _) => ("X-SHA256-Digest", w, &hashes.sha256),
        (None, Some(w)) => ("X-SHA1-Digest", w, &sha1),
        (None, None) => return Err(retry("no digest header")),
    };
    if want != got {
        return Err(retry(format!("digest mismatch: the body ({size} bytes) hashes to {got}, {name} says {want}; not written")));
    }
    out.get_ref().sync_all().await.map_err(local)?;
    let released = crate::transparency::Released {
        index: log_index,
        sha256: hashes.sha256.clone(),
    };
    Ok(Answer::Done(Signed {
        temp,
        hashes: Some(hashes),
        released: Some(released),
    }))
}

/// With `--log-key`: `signed` must be in `url`'s transparency log, or it is
/// refused (and the next host tried).
async fn check_logged(
    s: &Session,
    url: &str,
    format: &str,
    signed: &Signed,
) -> Result<(), TryError> {
    let (Some(key), Some(released)) = (&s.log_key, &signed.released) else {
        return Ok(());
    };
    match crate::transparency::check_released(&s.client, url, format, key, released).await {
        Ok(index) => {
            log::debug(format!(
                "{}: entry {index} of {url}'s transparency log",
                released.sha256
            ));
            Ok(())
        }
        Err(e) => Err(retry(format!(
            "result refused: not shown to be in the host's transparency log: {e}"
        ))),
    }
}

fn temp_display(dir: &Path) -> String {
    format!("a temp file in {}", dir.display())
}

/// Signs `input` (shown to servers as `label`) with `format`; returns the
/// verified result in a temp file in `out_dir`. `hashes` are the input's
/// digests when known; they are computed here only when this host's way of
/// signing needs them first (a GET by hash, gpg's SHA-256 state), or while
/// uploading where the host takes the digest after the file, and left
/// unknown when the host signs a PE or MAR by digest (one read of the file).
pub async fn sign(
    s: &Session,
    format: &str,
    input: &Path,
    label: &str,
    hashes: &mut Option<Hashes>,
    out_dir: &Path,
) -> Result<Signed, Failure> {
    let Some(pool) = s.pools.get(format) else {
        return Err(Failure::Local(format!("no host for format {format}")));
    };
    let shown = input.display();
    let mut i = pool.start();
    let mut errors = 0u32;
    let mut tried: Vec<String> = Vec::new();
    let mut uploaded_here = false;
    let mut announced = None;
    // Digest signing: what was prepared for which spec (kept across hosts),
    // and whether this host turned it down since its /health was read.
    let mut prepared = None;
    let mut digest_refused_here = false;
    let give_up = |tried: &[String], why: &str| {
        Failure::Remote(format!(
            "could not sign {shown} with {format}{why}:\n    {}",
            tried.join("\n    ")
        ))
    };
    loop {
        let url = pool.url(i);
        let tag = |h: &Option<Hashes>| h.as_ref().map_or(label.to_string(), |h| h.sha256.clone());
        let wait = pool.wait_for(i);
        if !wait.is_zero() {
            log::debug(format!(
                "{}: {url} asked to wait {} ms",
                tag(hashes),
                wait.as_millis()
            ));
            tokio::time::sleep(wait.min(s.remaining())).await;
        }
        if s.remaining().is_zero() {
            tried.push("then the overall --timeout ran out".into());
            return Err(give_up(&tried, ""));
        }
        let started = Instant::now();
        let info = s.health_of(url, format).await;
        let by_digest = if s.whole_file || digest_refused_here {
            None
        } else {
            info.digest
        };
        let hash_first = match by_digest {
            Some(spec) => spec == DigestSpec::Sha256State,
            None => !info.trailing_sha256 || uploaded_here,
        };
        if hash_first && hashes.is_none() {
            *hashes = Some(
                hash_file(input)
                    .await
                    .map_err(|e| Failure::Local(format!("cannot read it: {e}")))?,
            );
        }
        if announced != Some(i) {
            log::info(format!("{}: processing {shown} on {url}", tag(hashes)));
            announced = Some(i);
        }
        let result = if let Some(spec) = by_digest {
            let on = crate::digest::On {
                url,
                format,
                label,
                out_dir,
            };
            let known = hashes.as_ref();
            let mut signed = crate::digest::sign(s, &on, spec, input, known, &mut prepared).await;
            if let Ok(Some(done)) = &signed {
                if let Err(e) = check_logged(s, url, format, done).await {
                    signed = Err(e);
                }
            }
            match signed {
                Ok(Some(signed)) => {
                    log::info(format!(
                        "{}: OK (signed by digest; the file was not sent)",
                        tag(hashes)
                    ));
                    return Ok(signed);
                }
                Ok(None) => {
                    log::info(format!(
                        "{}: not signed by digest on {url}; uploading",
                        tag(hashes)
                    ));
                    digest_refused_here = true;
                    continue;
                }
                Err(e) => Err(e),
            }
        } else if let Some(known) = hashes.as_ref().filter(|_| hash_first) {
            let h = &known.sha256;
            let mut got = get(s, url, format, known, out_dir, label).await;
            if let Ok(Answer::Done(done)) = &got {
                if let Err(e) = check_logged(s, url, format, done).await {
                    got = Err(e);
                }
            }
            match got {
                Ok(Answer::Done(signed)) => {
                    log::info(format!("{h}: OK"));
                    return Ok(signed);
                }
                Ok(Answer::Pending) => {
                    log::debug(format!("{h}: pending on {url}"));
                    // A server without long polling answers at once: do not spin.
                    if started.elapsed() < Duration::from_millis(500) {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    continue;
                }
                Ok(Answer::Unknown) if uploaded_here => {
                    Err(retry("forgot the file it had accepted (restarted?)"))
                }
                Ok(Answer::Failed(what)) => {
                    // The next try uploads again, on this host too.
                    uploaded_here = false;
                    Err(retry(what))
                }
                Ok(Answer::Unknown) => {
                    log::info(format!("{h}: uploading {shown} to {url}"));
                    let r = upload::upload(s, url, format, input, label, Before(known)).await;
                    r.map(|_| uploaded_here = true)
                }
                Err(e) => Err(e),
            }
        } else {
            // Not hashed yet, and the host takes the digest after the file:
            // hash while uploading, then fetch the result by that hash.
            log::info(format!(
                "{label}: uploading {shown} to {url} (hashed on the way)"
            ));
            match upload::upload(s, url, format, input, label, After).await {
                Ok(Some(got)) => {
                    log::info(format!("{}: uploaded {shown}", got.sha256));
                    *hashes = Some(got);
                    uploaded_here = true;
                    Ok(())
                }
                Ok(None) => Err(TryError::Local(
                    "the upload was accepted but its digest was not kept".into(),
                )),
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(()) => continue,
            Err(TryError::Local(msg)) => return Err(Failure::Local(msg)),
            Err(TryError::Fatal(what)) => {
                let h = tag(hashes);
                log::warn(format!(
                    "{h}: {url} answered {what}; no other host is tried for this answer"
                ));
                tried.push(format!("{url} answered {what}"));
                return Err(give_up(&tried, ""));
            }
            Err(TryError::Wait { what, wait }) => {
                log::debug(format!(
                    "{}: {url} answered {what}; asking it again in {} s",
                    tag(hashes),
                    wait.as_secs()
                ));
                // The format's pool: every file of it waits for this host.
                pool.hold_off(i, wait);
            }
            Err(TryError::Retry { what, retry_after }) => {
                errors += 1;
                tried.push(format!("{url}: {what}"));
                let h = tag(hashes);
                if let Some(ra) = retry_after {
                    pool.hold_off(i, ra.min(Duration::from_secs(60)));
                }
                if errors >= s.max_errors {
                    return Err(give_up(
                        &tried,
                        &format!(" (gave up after {errors} errors)"),
                    ));
                }
                let next = pool.rotate(i);
                let delay = s.backoff.delay(errors).min(s.remaining());
                log::warn(format!(
                    "{h}: {url} failed ({what}); {} {} in {} ms (error {errors} of at most {})",
                    if next == i {
                        "retrying"
                    } else {
                        "failing over to"
                    },
                    pool.url(next),
                    delay.as_millis(),
                    s.max_errors
                ));
                tokio::time::sleep(delay).await;
                if next != i {
                    uploaded_here = false;
                    digest_refused_here = false;
                }
                i = next;
            }
        }
    }
}
