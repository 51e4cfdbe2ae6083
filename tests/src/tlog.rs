//! Helpers for the transparency log tests (issue 27): fresh Ed25519 log keys
//! (`openssl genpkey`), a server with `[log]`, signing by upload and by
//! digest, and `tlogcheck` (tests/go/tlogcheck): Go's own
//! `golang.org/x/mod/sumdb/{note,tlog}` checking our log.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::digest::sha256_parts;
use crate::{certs, passphrase, repo, run, sha256_hex, Server, ServerOpts, Upload};

/// The origin of the test logs.
pub const ORIGIN: &str = "signing.test/log";
/// The passphrase of the encrypted test log keys.
pub const LOG_PASSPHRASE: &str = "log-key-passphrase";

/// A fresh Ed25519 key in `dir/log.key` (PKCS#8 PEM), encrypted with
/// [`LOG_PASSPHRASE`] when `encrypted`.
pub fn log_key(dir: &Path, encrypted: bool) -> PathBuf {
    let key = dir.join("log.key");
    let mut cmd = Command::new("openssl");
    cmd.args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key);
    if encrypted {
        cmd.args(["-aes-256-cbc", "-pass", &format!("pass:{LOG_PASSPHRASE}")]);
    }
    let (ok, out) = run(&mut cmd);
    assert!(ok, "openssl genpkey: {out}");
    key
}

/// The default gpg format (digest signing allowed) with a `[log]` section
/// keeping the log in `log_dir`; the log key's passphrase comes after the
/// gpg key's on stdin.
pub fn opts(key: &Path, log_dir: &Path, encrypted: bool) -> ServerOpts {
    let mut o = ServerOpts::default();
    o.formats = format!(
        "{}digest_signing = yes\n\n[log]\nkey = {}\norigin = {ORIGIN}\ndir = {}\ncheckpoint_interval = 50\n",
        o.formats,
        key.display(),
        log_dir.display()
    );
    if encrypted {
        o.stdin = format!("{}\n{LOG_PASSPHRASE}\n", passphrase());
    }
    o
}

/// Signs `body` by upload; the upload's and the fetch's (status, reason
/// body), and the sha256 of what was released on a 200.
pub fn sign_upload(s: &Server, token: &str, body: &[u8]) -> (u16, String, Option<String>) {
    let (status, text) = Upload::new(token, "f.bin", body).send(&s.client(), &s.url, "gpg");
    if status != 202 {
        return (status, text, None);
    }
    let (status, _, out) = crate::fetch(&s.client(), &s.url, "gpg", &sha256_hex(body));
    let released = (status == 200).then(|| sha256_hex(&out));
    (status, String::from_utf8_lossy(&out).into_owned(), released)
}

/// Signs `body` by digest (`POST /digest/gpg`); (status, body text, the
/// sha256 of the signature on a 200).
pub fn sign_digest(
    client: &reqwest::blocking::Client,
    url: &str,
    token: &str,
    body: &[u8],
) -> Result<(u16, String, Option<String>), reqwest::Error> {
    let (words, length, tail) = sha256_parts(body);
    let r = client
        .post(format!("{url}/digest/gpg"))
        .form(&[
            ("token", token),
            ("filename", "f.bin"),
            ("sha256_state", &words),
            ("length", &length),
            ("tail", &tail),
        ])
        .send()?;
    let status = r.status().as_u16();
    let bytes = r.bytes()?;
    let released = (status == 200).then(|| sha256_hex(&bytes));
    Ok((
        status,
        String::from_utf8_lossy(&bytes).into_owned(),
        released,
    ))
}

/// The `tlogcheck` binary, built once per test process from
/// tests/go/tlogcheck with the Debian package's Go sources, offline.
pub fn tlogcheck() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("tlogcheck-{}", std::process::id()));
        let (ok, text) = run(Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(repo().join("tests/go/tlogcheck"))
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOPROXY", "off")
            .env("GOCACHE", std::env::temp_dir().join("tlogcheck-gocache")));
        assert!(
            ok,
            "cannot build tests/go/tlogcheck (scripts/setup.sh installs golang-go and golang-golang-x-mod-dev): {text}"
        );
        out
    })
}

/// What `tlogcheck` found: the tree size and the entries, one JSON value each.
pub struct Checked {
    /// Entries in the tree.
    pub size: u64,
    /// Every entry, parsed.
    pub entries: Vec<serde_json::Value>,
}

/// Runs `tlogcheck` on the log at `s`'s `/log/` (over HTTPS) with verifier
/// key `vkey`, checking consistency with the checkpoint file `old` when given.
pub fn go_check_url(s: &Server, vkey: &str, old: Option<&Path>) -> Result<Checked, String> {
    let mut cmd = Command::new(tlogcheck());
    cmd.args(["-vkey", vkey, "-url", &format!("{}/log/", s.url), "-ca"])
        .arg(certs().join("ca.pem"));
    go_check(cmd, old)
}

/// Runs `tlogcheck` on the log directory `dir`.
pub fn go_check_dir(dir: &Path, vkey: &str, old: Option<&Path>) -> Result<Checked, String> {
    let mut cmd = Command::new(tlogcheck());
    cmd.args(["-vkey", vkey, "-dir"]).arg(dir);
    go_check(cmd, old)
}

fn go_check(mut cmd: Command, old: Option<&Path>) -> Result<Checked, String> {
    if let Some(old) = old {
        cmd.arg("-old").arg(old);
    }
    let out = cmd.output().map_err(|e| format!("tlogcheck: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned() + &stdout);
    }
    let mut lines = stdout.lines();
    let size = lines
        .next()
        .and_then(|l| l.strip_prefix("size "))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("tlogcheck said: {stdout}"))?;
    let entries = lines
        .map(|l| serde_json::from_str(l).map_err(|e| format!("entry {l:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Checked { size, entries })
}

/// The server's /health `log` object.
pub fn health_log(s: &Server) -> serde_json::Value {
    let h: serde_json::Value = s
        .client()
        .get(format!("{}/health", s.url))
        .send()
        .expect("GET /health")
        .json()
        .expect("health JSON");
    h["log"].clone()
}

/// The output sha256 of every entry.
pub fn outputs(c: &Checked) -> std::collections::HashSet<String> {
    c.entries
        .iter()
        .filter_map(|e| e["output_sha256"].as_str().map(str::to_string))
        .collect()
}
