//! `signtool sign`: finds the files, decides where each result goes, runs
//! the files concurrently (`--jobs`), consults and fills the cache, and puts
//! each verified result in place with a rename.
//!
//! Invariant: a destination is only ever replaced by `rename` of a complete,
//! verified, fsynced temp file from the same directory; an input is never
//! opened for writing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::cli::{self, SignArgs};
use crate::hosts::{Backoff, HostPool};
use crate::log;
use crate::session::{self, Failure, Hashes, Nonce, Session, Signed};
use crate::transfer;
use crate::{EXIT_FAILED, EXIT_LOCAL, EXIT_OK};

/// Where one input's results go.
#[derive(Debug)]
struct Job {
    input: PathBuf,
    /// Destination of the signed content (content formats).
    dest: PathBuf,
    /// Destination of the detached signature(s): `.asc` and, for a second
    /// detached format, `.FORMAT.asc`.
    asc: PathBuf,
    /// For an `.app` directory: the bundle, and the private directory beside
    /// it holding its `.tar.gz` (`input` and `dest`) until it is unpacked.
    bundle: Option<(PathBuf, tempfile::TempDir)>,
}

/// Runs the command; returns the exit code.
pub async fn run(args: SignArgs) -> u8 {
    log::set_level(if args.quiet {
        log::QUIET
    } else if args.verbose {
        log::DEBUG
    } else {
        log::INFO
    });
    let (session, formats) = match prepare(&args) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("signtool: {msg}");
            return EXIT_LOCAL;
        }
    };
    let formats = outputs(&session, formats).await;
    match jobs(&args, &formats) {
        Ok(jobs) => execute(&args, &session, jobs, &formats).await,
        Err(msg) => {
            eprintln!("signtool: {msg}");
            EXIT_LOCAL
        }
    }
}

/// One format to apply, and whether its result is a detached signature.
#[derive(Debug, Clone)]
struct Format {
    name: String,
    detached: bool,
}

/// Each format's output, as its hosts' /health tells (the name rule for a
/// host that does not), in order: the formats that sign the content first,
/// detached signatures last (they must cover the final content).
async fn outputs(s: &Session, names: Vec<String>) -> Vec<Format> {
    // Every format's hosts at once: unreachable hosts cost one connect timeout in all.
    let asks = names.iter().map(|name| s.detached(name));
    let detached = futures_util::future::join_all(asks).await;
    let all: Vec<Format> = names
        .into_iter()
        .zip(detached)
        .map(|(name, detached)| Format { name, detached })
        .collect();
    let (mut content, detached): (Vec<Format>, Vec<Format>) =
        all.into_iter().partition(|f| !f.detached);
    content.extend(detached);
    content
}

fn prepare(args: &SignArgs) -> Result<(Session, Vec<String>), String> {
    let formats = cli::formats(&args.formats)?;
    let mut urls: HashMap<String, Vec<String>> = HashMap::new();
    for spec in &args.hosts {
        let (fmts, url) = cli::parse_host(spec)?;
        let fmts = if fmts.is_empty() {
            formats.clone()
        } else {
            fmts
        };
        for f in fmts {
            let list = urls.entry(f).or_default();
            if !list.contains(&url) {
                list.push(url.clone());
            }
        }
    }
    let mut pools = HashMap::new();
    for f in &formats {
        let list = urls
            .remove(f)
            .ok_or_else(|| format!("no host serves format {f}: add -H {f}:HOST:PORT"))?;
        pools.insert(f.clone(), HostPool::new(list, !args.no_shuffle));
    }
    let token = std::fs::read_to_string(&args.token_file)
        .map_err(|e| {
            format!(
                "cannot read the token file {}: {e}",
                args.token_file.display()
            )
        })?
        .trim()
        .to_string();
    if token.is_empty() {
        return Err(format!(
            "the token file {} is empty",
            args.token_file.display()
        ));
    }
    let client = crate::tls::client(&args.net).map_err(|e| format!("{e:#}"))?;
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .map_err(|_| "--timeout must be a number of seconds".to_string())?;
    let read_timeout =
        crate::tls::secs(args.net.read_timeout, "--read-timeout").map_err(|e| e.to_string())?;
    let session = Session {
        client,
        pools,
        token,
        nonce: Nonce::load(args.nonce_file.clone()),
        backoff: Backoff {
            base: Duration::from_millis(args.backoff_base_ms),
            max: Duration::from_millis(args.backoff_max_ms),
        },
        max_errors: args.max_errors.max(1),
        deadline: Instant::now() + timeout,
        read_timeout,
        health: Default::default(),
        whole_file: args.whole_file,
        renamed_in: Default::default(),
        log_key: args
            .log_key
            .as_deref()
            .map(formats::tlog::NoteVerifier::parse)
            .transpose()
            .map_err(|e| format!("--log-key: {e}"))?,
    };
    Ok((session, formats))
}

/// The inputs (directories searched with -i/-x) and their destinations.
fn jobs(args: &SignArgs, formats: &[Format]) -> Result<Vec<Job>, String> {
    let pattern = |p: &String| glob::Pattern::new(p).map_err(|e| format!("bad pattern {p:?}: {e}"));
    let includes = args
        .includes
        .iter()
        .map(pattern)
        .collect::<Result<Vec<_>, _>>()?;
    let excludes = args
        .excludes
        .iter()
        .map(pattern)
        .collect::<Result<Vec<_>, _>>()?;
    let mut inputs = Vec::new();
    let mut bundles = Vec::new();
    for p in &args.paths {
        let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.is_dir() && p.extension().is_some_and(|e| e == "app") {
            bundles.push(crate::bundle::pack(p)?);
        } else if meta.is_dir() {
            walk(p, &includes, &excludes, &mut inputs)
                .map_err(|e| format!("cannot list {}: {e}", p.display()))?;
        } else {
            inputs.push(p.clone());
        }
    }
    if !bundles.is_empty() && (args.output_file.is_some() || args.output_dir.is_some()) {
        return Err("an .app bundle is signed in place: -o and -d do not apply to it".into());
    }
    if let Some(o) = &args.output_file {
        if inputs.len() != 1 || args.paths.iter().any(|p| p.is_dir()) {
            return Err(format!(
                "-o {} needs exactly one input file ({} given)",
                o.display(),
                inputs.len()
            ));
        }
    }
    if let Some(d) = &args.output_dir {
        std::fs::create_dir_all(d)
            .map_err(|e| format!("cannot create the output directory {}: {e}", d.display()))?;
    }
    let only_detached = formats.iter().all(|f| f.detached);
    inputs
        .into_iter()
        .map(|input| {
            let name = input
                .file_name()
                .ok_or_else(|| format!("{} is not a file name", input.display()))?
                .to_owned();
            let (dest, asc) = match (&args.output_file, &args.output_dir) {
                // Mozilla's `-f gpg -o FILE.asc`: -o names the signature.
                (Some(o), _) if only_detached => (input.clone(), o.clone()),
                (Some(o), _) => (o.clone(), with_suffix(o, ".asc")),
                (None, Some(d)) => {
                    let dest = d.join(&name);
                    let asc = with_suffix(&dest, ".asc");
                    (if only_detached { input.clone() } else { dest }, asc)
                }
                (None, None) => (input.clone(), with_suffix(&input, ".asc")),
            };
            Ok(Job {
                input,
                dest,
                asc,
                bundle: None,
            })
        })
        .chain(bundles.into_iter().map(|(app, dir, tarball)| {
            Ok(Job {
                input: tarball.clone(),
                dest: tarball.clone(),
                asc: with_suffix(&tarball, ".asc"),
                bundle: Some((app, dir)),
            })
        }))
        .collect()
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn walk(
    dir: &Path,
    includes: &[glob::Pattern],
    excludes: &[glob::Pattern],
    out: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let kind = e.file_type()?;
        if kind.is_dir() {
            walk(&path, includes, excludes, out)?;
            continue;
        }
        let name = e.file_name();
        let name = name.to_string_lossy();
        // Our own leftovers from a killed run are never inputs.
        if name.ends_with(".signtool-tmp") {
            continue;
        }
        let included = includes.is_empty() || includes.iter().any(|p| p.matches(&name));
        if included && !excludes.iter().any(|p| p.matches(&name)) {
            out.push(path);
        } else {
            log::debug(format!("skipping {} (-i/-x)", path.display()));
        }
    }
    Ok(())
}

async fn execute(args: &SignArgs, s: &Session, jobs: Vec<Job>, formats: &[Format]) -> u8 {
    if jobs.is_empty() {
        eprintln!("signtool: no file to sign (check the -i/-x patterns)");
        return EXIT_LOCAL;
    }
    let cache = args.cachedir.as_deref();
    let total = jobs.len();
    let results: Vec<(PathBuf, Result<(), Failure>)> = futures_util::stream::iter(jobs)
        .map(|job| async move {
            let mut r = process(s, &job, formats, cache).await;
            match (&r, job.bundle) {
                (Ok(()), Some((app, dir))) => {
                    r = crate::bundle::unpack_in_place(&job.dest, &app, &dir)
                        .map_err(Failure::Local);
                    (app, r)
                }
                (_, Some((app, _))) => (app, r),
                (_, None) => (job.input, r),
            }
        })
        .buffer_unordered(usize::from(args.jobs))
        .collect()
        .await;
    sync_dirs(s).await;
    let mut code = EXIT_OK;
    let mut failed = 0;
    for (input, r) in &results {
        match r {
            Ok(()) => {}
            Err(Failure::Remote(msg)) => {
                failed += 1;
                eprintln!("signtool: FAILED: {msg}");
                code = code.max(EXIT_FAILED);
            }
            Err(Failure::Local(msg)) => {
                failed += 1;
                eprintln!("signtool: FAILED: {}: {msg}", input.display());
                code = EXIT_LOCAL;
            }
        }
    }
    if failed == 0 {
        log::info(format!("Done: {total} file(s) signed."));
    } else {
        eprintln!("signtool: {failed} of {total} file(s) not signed");
    }
    code
}

/// All formats on one input, in order.
async fn process(
    s: &Session,
    job: &Job,
    formats: &[Format],
    cache: Option<&Path>,
) -> Result<(), Failure> {
    let label = job
        .input
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    // The input's digests: computed when first needed (a cache key, a GET by
    // hash, gpg's state), or while uploading; a PE or MAR signed by digest
    // is read once, by the copy that signs it.
    let mut hashes: Option<Hashes> = None;
    let dest_dir = parent(&job.dest);
    let asc_dir = parent(&job.asc);
    for d in [&dest_dir, &asc_dir] {
        std::fs::create_dir_all(d)
            .map_err(|e| Failure::Local(format!("cannot create {}: {e}", d.display())))?;
    }
    let mut content: Option<Signed> = None;
    for format in formats.iter().filter(|f| !f.detached).map(|f| &f.name) {
        let input = content
            .as_ref()
            .map(|c| c.temp.to_path_buf())
            .unwrap_or_else(|| job.input.clone());
        let signed = obtain(s, format, &input, &label, &mut hashes, &dest_dir, cache).await?;
        hashes = signed.hashes.clone();
        content = Some(signed);
    }
    let signed_content = match content {
        Some(signed) => {
            // The signed file keeps the input's mode (executables stay executable).
            let mode = std::fs::metadata(&job.input).map(|m| m.permissions()).ok();
            put_in_place(s, signed, &job.dest, mode).await?;
            job.dest.clone()
        }
        None => job.input.clone(),
    };
    let detached = formats.iter().filter(|f| f.detached).map(|f| &f.name);
    for (k, format) in detached.enumerate() {
        let dest = if k == 0 {
            job.asc.clone()
        } else {
            with_suffix(&job.asc.with_extension(""), &format!(".{format}.asc"))
        };
        let sig = obtain(
            s,
            format,
            &signed_content,
            &label,
            &mut hashes,
            &asc_dir,
            cache,
        )
        .await?;
        put_in_place(s, sig, &dest, None).await?;
    }
    Ok(())
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The cache, else the servers; a server's result is then cached.
async fn obtain(
    s: &Session,
    format: &str,
    input: &Path,
    label: &str,
    hashes: &mut Option<Hashes>,
    out_dir: &Path,
    cache: Option<&Path>,
) -> Result<Signed, Failure> {
    let Some(cache) = cache else {
        return transfer::sign(s, format, input, label, hashes, out_dir).await;
    };
    if hashes.is_none() {
        // The cache is keyed by the input's SHA-256.
        *hashes = Some(
            session::hash_file(input)
                .await
                .map_err(|e| Failure::Local(format!("cannot read it: {e}")))?,
        );
    }
    let key = hashes
        .as_ref()
        .map(|h| h.sha256.clone())
        .unwrap_or_default();
    let path = cache.join(format).join(&key);
    if let Some(signed) = crate::cache::lookup(&path, out_dir, label).await {
        log::info(format!(
            "{key}: {} with {format} from the cache ({}); OK",
            input.display(),
            path.display()
        ));
        return Ok(signed);
    }
    let mut signed = transfer::sign(s, format, input, label, hashes, out_dir).await?;
    if let Err(e) = crate::cache::store(&mut signed, &path).await {
        log::warn(format!(
            "warning: cannot store {} in the cache: {e}",
            path.display()
        ));
    }
    Ok(signed)
}

/// Renames the verified (fsynced) temp file over `dest` (same directory:
/// atomic), on a blocking thread (a rename is a metadata write; it would
/// otherwise stall one of the runtime's few threads). The directory is
/// fsynced once per run, before signtool exits ([`sync_dirs`]): a crash
/// before that leaves the old file or the complete new one, never a part.
async fn put_in_place(
    s: &Session,
    signed: Signed,
    dest: &Path,
    mode: Option<std::fs::Permissions>,
) -> Result<(), Failure> {
    let dest = dest.to_path_buf();
    let dir = parent(&dest);
    tokio::task::spawn_blocking(move || put_in_place_now(signed, &dest, mode))
        .await
        .map_err(|e| Failure::Local(format!("the rename task failed: {e}")))??;
    if let Ok(mut dirs) = s.renamed_in.lock() {
        dirs.insert(dir);
    }
    Ok(())
}

/// Fsyncs every directory a result was renamed into, so the renames are
/// durable when signtool exits.
async fn sync_dirs(s: &Session) {
    let dirs = s
        .renamed_in
        .lock()
        .map(|mut d| std::mem::take(&mut *d))
        .unwrap_or_default();
    let _ = tokio::task::spawn_blocking(move || {
        for d in dirs {
            if let Ok(f) = std::fs::File::open(&d) {
                if let Err(e) = f.sync_all() {
                    log::warn(format!(
                        "warning: cannot sync the directory {}: {e}",
                        d.display()
                    ));
                }
            }
        }
    })
    .await;
}

fn put_in_place_now(
    signed: Signed,
    dest: &Path,
    mode: Option<std::fs::Permissions>,
) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    let local = |e: std::io::Error| Failure::Local(format!("cannot write {}: {e}", dest.display()));
    let perms = mode.unwrap_or_else(|| std::fs::Permissions::from_mode(0o644));
    std::fs::set_permissions(&signed.temp, perms).map_err(local)?;
    signed.temp.persist(dest).map_err(|e| local(e.error))?;
    Ok(())
}
