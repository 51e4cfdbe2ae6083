//! Checking a host's transparency log (issue 27): `--log-key` after each
//! signing (the result must be in the log: its entry names exactly the bytes
//! we received, and the inclusion proof, made from the host's tiles, checks
//! against a checkpoint signed by the log key), and `signtool log verify` /
//! `signtool log watch` (a whole log read once, every entry checked, the
//! checkpoint consistent with a saved one).
//!
//! The formats and proofs are `formats::tlog`, the server's own code; the
//! end-to-end tests also check the server's logs with Go's sumdb packages.
//! Tiles are fetched over the run's HTTPS client; the checks run on a
//! blocking thread that waits for each fetch.

use std::path::Path;

use formats::tlog::tile::{self, Hashes, Kind, Tile, TileSource, WIDTH};
use formats::tlog::{leaf_hash, proof, verify, Checkpoint, NoteVerifier};

/// Largest checkpoint read.
const MAX_CHECKPOINT: usize = formats::tlog::note::MAX_NOTE;
/// Largest tile or bundle read (256 entries of at most 64 KiB).
const MAX_TILE: usize = 256 * (tile::MAX_ENTRY + 2);

/// What a host released: its `X-Log-Index`, and the SHA-256 of the bytes.
#[derive(Debug, Clone)]
pub struct Released {
    /// The entry's index, as the host said.
    pub index: Option<u64>,
    /// SHA-256 hex of exactly the bytes received.
    pub sha256: String,
}

/// `X-Log-Index`, when the answer has one.
pub fn index_header(h: &reqwest::header::HeaderMap) -> Option<u64> {
    h.get("x-log-index")?.to_str().ok()?.trim().parse().ok()
}

/// GETs `url` whole, at most `limit` bytes.
async fn get(client: &reqwest::Client, url: &str, limit: usize) -> Result<Vec<u8>, String> {
    let mut r = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", crate::log::describe(&e)))?;
    if r.status() != 200 {
        return Err(format!("GET {url}: {}", r.status()));
    }
    let mut body = Vec::new();
    while let Some(piece) = r
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {}", crate::log::describe(&e)))?
    {
        if body.len() + piece.len() > limit {
            return Err(format!("GET {url}: over {limit} bytes"));
        }
        body.extend_from_slice(&piece);
    }
    Ok(body)
}

/// A log's tiles over HTTPS, read from a blocking thread.
struct HttpTiles {
    client: reqwest::Client,
    prefix: String,
    rt: tokio::runtime::Handle,
}

impl TileSource for HttpTiles {
    fn read(&mut self, t: &Tile) -> Result<Vec<u8>, String> {
        fetch_tile(&self.client, &self.prefix, t, &self.rt)
    }
}

/// Tile `t` under `prefix`; a partial tile the log no longer has (its full
/// tile is published) is cut from the full one, as the spec allows.
fn fetch_tile(
    client: &reqwest::Client,
    prefix: &str,
    t: &Tile,
    rt: &tokio::runtime::Handle,
) -> Result<Vec<u8>, String> {
    let url = format!("{prefix}/{}", t.path());
    match rt.block_on(get(client, &url, MAX_TILE)) {
        Err(e) if !t.is_full() && e.ends_with(" 404 Not Found") => {
            let full = Tile {
                width: WIDTH as u16,
                ..*t
            };
            let bytes = rt.block_on(get(client, &format!("{prefix}/{}", full.path()), MAX_TILE))?;
            tile::cut_from_full(t, &bytes).ok_or_else(|| format!("{}: too short", full.path()))
        }
        other => other,
    }
}

/// Fetches and opens the checkpoint at `prefix/checkpoint` with `key`.
async fn checkpoint(
    client: &reqwest::Client,
    prefix: &str,
    key: &NoteVerifier,
) -> Result<(Checkpoint, String), String> {
    let bytes = get(client, &format!("{prefix}/checkpoint"), MAX_CHECKPOINT).await?;
    let note = String::from_utf8(bytes).map_err(|_| "the checkpoint is not UTF-8".to_string())?;
    let cp = open(&note, key)?;
    Ok((cp, note))
}

/// Opens a checkpoint note with `key` and parses it.
pub fn open(note: &str, key: &NoteVerifier) -> Result<Checkpoint, String> {
    let text = key.open(note).map_err(|e| format!("checkpoint: {e}"))?;
    let cp = Checkpoint::parse(text)?;
    if cp.origin != key.name() {
        return Err(format!(
            "the checkpoint is for log {:?}, the key for {:?}",
            cp.origin,
            key.name()
        ));
    }
    Ok(cp)
}

/// Checks that what `host` released for `format` is in its log: the entry
/// at the released index names this format and exactly these bytes, and
/// its inclusion proof checks against the checkpoint signed by `key`.
pub async fn check_released(
    client: &reqwest::Client,
    host: &str,
    format: &str,
    key: &NoteVerifier,
    released: &Released,
) -> Result<u64, String> {
    let index = released.index.ok_or(
        "the host did not say where the result is in its transparency log (no X-Log-Index)",
    )?;
    let prefix = format!("{host}/log");
    let (cp, _) = checkpoint(client, &prefix, key).await?;
    if index >= cp.size {
        return Err(format!(
            "entry {index} is beyond the log's checkpoint ({} entries)",
            cp.size
        ));
    }
    let n = index / WIDTH;
    let bundle = Tile {
        kind: Kind::Entries,
        index: n,
        width: (cp.size - n * WIDTH).min(WIDTH) as u16,
    };
    let (c, p, rt) = (
        client.clone(),
        prefix.clone(),
        tokio::runtime::Handle::current(),
    );
    let bytes = tokio::task::spawn_blocking(move || fetch_tile(&c, &p, &bundle, &rt))
        .await
        .map_err(|e| format!("the check's thread failed: {e}"))??;
    let entries = tile::split_bundle(&bytes).ok_or("not an entry bundle")?;
    let entry = entries
        .get((index % WIDTH) as usize)
        .ok_or_else(|| format!("entry {index} is not in its bundle"))?
        .to_vec();
    let fields: serde_json::Value =
        serde_json::from_slice(&entry).map_err(|e| format!("entry {index}: not JSON: {e}"))?;
    if fields["output_sha256"] != released.sha256.as_str() || fields["format"] != format {
        return Err(format!(
            "entry {index} is not this result (it logs {} of {})",
            fields["output_sha256"], fields["format"]
        ));
    }
    let mut tiles = HttpTiles {
        client: client.clone(),
        prefix,
        rt: tokio::runtime::Handle::current(),
    };
    tokio::task::spawn_blocking(move || {
        let mut hashes = Hashes::new(cp.size, &mut tiles);
        let p = proof::prove_inclusion(&mut hashes, index)?;
        proof::check_inclusion(&p, index, cp.size, &leaf_hash(&entry), &cp.root)
    })
    .await
    .map_err(|e| format!("the check's thread failed: {e}"))??;
    Ok(index)
}

/// What `log verify` / `log watch` found.
pub struct Verified {
    /// The checkpoint checked.
    pub checkpoint: Checkpoint,
    /// Its signed note (for `--save`).
    pub note: String,
    /// The entries from index `since` on whose `key` is `signing_key` (watch).
    pub entries: Vec<(u64, String)>,
}

/// Reads the whole log at `prefix` (its URL, `…/log`): the checkpoint
/// signed by `key`, every tile and entry; with `since` (a saved checkpoint
/// note) checks it is a prefix of this one, and collects the entries after
/// it made by `signing_key`.
pub async fn verify_log(
    client: &reqwest::Client,
    prefix: &str,
    key: &NoteVerifier,
    since: Option<&str>,
    signing_key: Option<&str>,
) -> Result<Verified, String> {
    let prefix = prefix.trim_end_matches('/').to_string();
    let (cp, note) = checkpoint(client, &prefix, key).await?;
    let old = since.map(|n| open(n, key)).transpose()?;
    if let Some(old) = &old {
        if old.size > cp.size {
            return Err(format!(
                "the log shrank: the saved checkpoint has {} entries, this one {}",
                old.size, cp.size
            ));
        }
    }
    let mut tiles = HttpTiles {
        client: client.clone(),
        prefix,
        rt: tokio::runtime::Handle::current(),
    };
    let from = old.as_ref().map_or(0, |o| o.size);
    let wanted = signing_key.map(str::to_string);
    let checked = cp.clone();
    let entries = tokio::task::spawn_blocking(move || {
        let mut entries = Vec::new();
        verify::check_tree(&mut tiles, checked.size, &checked.root, |i, e| {
            if let Some(k) = &wanted {
                let v: serde_json::Value = serde_json::from_slice(e)
                    .map_err(|err| format!("entry {i}: not JSON: {err}"))?;
                if i >= from && v["key"].as_str() == Some(k.as_str()) {
                    entries.push((i, String::from_utf8_lossy(e).into_owned()));
                }
            }
            Ok(())
        })?;
        if let Some(old) = old.filter(|o| o.size > 0) {
            let mut hashes = Hashes::new(checked.size, &mut tiles);
            let p = proof::prove_consistency(&mut hashes, old.size)?;
            proof::check_consistency(&p, old.size, checked.size, &old.root, &checked.root)?;
        }
        Ok::<_, String>(entries)
    })
    .await
    .map_err(|e| format!("the check's thread failed: {e}"))??;
    Ok(Verified {
        checkpoint: cp,
        note,
        entries,
    })
}

/// Writes `note` to `path` atomically (temp file beside it, fsync, rename).
pub fn save(path: &Path, note: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut f = tempfile::NamedTempFile::new_in(dir)?;
    f.write_all(note.as_bytes())?;
    f.as_file().sync_all()?;
    f.persist(path).map_err(|e| e.error)?;
    Ok(())
}
