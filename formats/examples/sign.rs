//! Local signing without the server, for the benchmark suite (scripts/bench.sh).
//!
//! Opens one signer type from the registry exactly as the server does (key
//! file + passphrase, `needs_passphrase`, `open`), signs one input into an
//! output and prints the time spent unlocking and signing. It does not probe,
//! verify (unless `--verify`) or talk to any network, and it is not a
//! production tool: the passphrase comes from a file (the TEST passphrase in
//! certs/PASSPHRASE), which a real signing host must never have.
//!
//! ```text
//! cargo build --release -p signing-formats --example sign
//! sign TYPE --key KEY [--cert CERT] [--digest D] [--set K=V]... \
//!      [--passphrase-file FILE] [--repeat N] [--verify] INPUT OUTPUT
//! ```
//!
//! Output (one line on stdout, times in milliseconds):
//! `open_ms=… sign_ms=… sign_min_ms=… repeat=N` where `sign_ms` is the
//! median of the N signings (the output is removed between them).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use formats::{FormatConfig, SignContext};
use secrecy::SecretString;

struct Args {
    cfg: FormatConfig,
    passphrase_file: Option<PathBuf>,
    repeat: usize,
    verify: bool,
    input: PathBuf,
    output: PathBuf,
}

fn usage() -> String {
    "usage: sign TYPE --key KEY [--cert CERT] [--digest D] [--set K=V]... \
     [--passphrase-file FILE] [--repeat N] [--verify] INPUT OUTPUT"
        .to_string()
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let kind = it.next().ok_or_else(usage)?;
    let mut cfg = FormatConfig {
        name: kind.clone(),
        kind,
        ..FormatConfig::default()
    };
    let mut extra = BTreeMap::new();
    let (mut passphrase_file, mut repeat, mut verify) = (None, 1usize, false);
    let mut positional = Vec::new();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value\n{}", usage()))
        };
        match a.as_str() {
            "--key" => cfg.key = PathBuf::from(value()?),
            "--cert" => cfg.cert = Some(PathBuf::from(value()?)),
            "--digest" => cfg.digest = Some(value()?),
            "--set" => {
                let kv = value()?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("--set wants K=V, not {kv}"))?;
                extra.insert(k.to_string(), v.to_string());
            }
            "--passphrase-file" => passphrase_file = Some(PathBuf::from(value()?)),
            "--repeat" => repeat = value()?.parse().map_err(|e| format!("--repeat: {e}"))?,
            "--verify" => verify = true,
            _ if a.starts_with("--") => return Err(format!("unknown option {a}\n{}", usage())),
            _ => positional.push(PathBuf::from(a)),
        }
    }
    cfg.extra = extra;
    let [input, output]: [PathBuf; 2] = positional.try_into().map_err(|_| usage())?;
    Ok(Args {
        cfg,
        passphrase_file,
        repeat: repeat.max(1),
        verify,
        input,
        output,
    })
}

fn run() -> Result<String, String> {
    let a = parse()?;
    let kind = formats::registry::find(&a.cfg.kind).ok_or_else(|| {
        format!(
            "unknown type {} (known: {:?})",
            a.cfg.kind,
            formats::registry::known_types()
        )
    })?;
    let started = Instant::now();
    let needs = (kind.needs_passphrase)(&a.cfg).map_err(|e| format!("key: {e}"))?;
    let pass = match (&a.passphrase_file, needs) {
        (Some(f), true) => {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            Some(SecretString::from(
                text.trim_end_matches(['\n', '\r']).to_string(),
            ))
        }
        (None, true) => return Err("the key is encrypted: give --passphrase-file".into()),
        (_, false) => None,
    };
    let signer = (kind.open)(&a.cfg, pass.as_ref()).map_err(|e| format!("open: {e}"))?;
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let ctx = SignContext {
        filename: a
            .input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ..Default::default()
    };
    let mut times = Vec::with_capacity(a.repeat);
    for i in 0..a.repeat {
        if i > 0 {
            std::fs::remove_file(&a.output).map_err(|e| format!("{}: {e}", a.output.display()))?;
        }
        let t = Instant::now();
        signer
            .sign(&a.input, &a.output, &ctx)
            .map_err(|e| format!("sign: {e}"))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    if a.verify {
        signer
            .verify(&a.input, &a.output)
            .map_err(|e| format!("verify: {e}"))?;
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(0.0);
    let min = times.first().copied().unwrap_or(0.0);
    Ok(format!(
        "open_ms={open_ms:.3} sign_ms={median:.3} sign_min_ms={min:.3} repeat={}",
        a.repeat
    ))
}

fn main() -> ExitCode {
    match run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sign: {e}");
            ExitCode::from(2)
        }
    }
}
