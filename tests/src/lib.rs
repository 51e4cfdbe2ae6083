//! Helpers for the end-to-end tests: start the real `signing-server` binary
//! on loopback with a config of the test's making, talk to it over real TLS,
//! and stop it. Nothing here mocks a server, a signer or a verifier.

pub mod authenticode;
pub mod balancer;
pub mod windows;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::Digest;

pub mod apk;
pub mod apple;
pub mod busy_peer;
pub mod digest;
pub mod mar;
pub mod pkcs11;
pub mod policy;
pub mod proxy;
pub mod signtool;
pub mod tlog;

/// Polls `cond` every 10 ms until it holds or `limit` has passed; whether it
/// held. A bounded wait for something to happen, never a timing assertion:
/// callers assert on the result, saying what never happened.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Fails the test, loudly, unless it runs as root (`why`: what needs root).
/// CI runs as root, so such a test always runs there; elsewhere it fails
/// instead of passing without having run. To leave it out on purpose:
/// `cargo nextest run -E 'not test(=NAME)'`.
pub fn require_root(why: &str) {
    let (_, uid) = run(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "NOT RUN: this test needs root ({why}); CI runs as root. \
         Run it as root, or leave it out explicitly with -E 'not test(=NAME)'"
    );
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The test-only PKI.
pub fn certs() -> PathBuf {
    repo().join("certs")
}

/// The Python venv made by scripts/setup.sh (SIGNING_TEST_VENV, default
/// ~/.cache/signing-server/venv): Mozilla's signtool 4.x and `mar` tools.
pub fn venv() -> PathBuf {
    std::env::var_os("SIGNING_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/signing-server/venv")
        })
}

/// Mozilla's Python signtool 4.x client, from the venv.
pub fn mozilla_signtool() -> PathBuf {
    let exe = venv().join("bin/signtool");
    assert!(
        exe.is_file(),
        "{} missing: run scripts/setup.sh (or scripts/test.sh) to create the venv",
        exe.display()
    );
    exe
}

/// Runs Mozilla's signtool 4.x once against `s`, as a build machine would:
/// `-H FORMAT:HOST:PORT -c ca.pem -t dir/token -n dir/nonce -f FORMAT -o out input`
/// (a fresh token for 127.0.0.1 is written to `dir/token`; the client keeps its
/// nonce in `dir/nonce`). Returns (success, output).
pub fn mozilla_sign(
    s: &Server,
    dir: &Path,
    format: &str,
    input: &Path,
    out: &Path,
) -> (bool, String) {
    let (token, nonce) = (dir.join("token"), dir.join("nonce"));
    std::fs::write(&token, s.mint("127.0.0.1", 300)).expect("token file");
    let host = format!("{format}:{}", s.url.trim_start_matches("https://"));
    run(Command::new(mozilla_signtool())
        .args(["-H", &host, "-c"])
        .arg(certs().join("ca.pem"))
        .arg("-t")
        .arg(&token)
        .arg("-n")
        .arg(&nonce)
        .args(["-f", format, "-o"])
        .arg(out)
        .arg(input))
}

/// The shared test passphrase (certs/PASSPHRASE).
pub fn passphrase() -> String {
    std::fs::read_to_string(certs().join("PASSPHRASE")).expect("certs/PASSPHRASE")
}

/// A binary of this workspace, built next to the test executable
/// (`cargo build --workspace --bins` must have run: `.ci/run` does).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// Token secret of the test configs.
pub const SECRET: &str = "test-token-secret-0123456789";
/// An older secret that test configs still accept (`token_secret1`).
pub const OLD_SECRET: &str = "old-token-secret-0123456789";
/// Minting credentials of the test configs.
pub const MINT_USER: &str = "tokenhost";
/// Minting password of the test configs.
pub const MINT_PASSWORD: &str = "mint-password";

/// How to configure a test server. Each `*_extra` string is appended to
/// its section, so a later line may not repeat a key already set.
#[derive(Clone)]
pub struct ServerOpts {
    /// Lines added to `[server]`.
    pub server_extra: String,
    /// The whole `[security]` section body.
    pub security: String,
    /// The `[format:…]` sections.
    pub formats: String,
    /// Lines fed to stdin (passphrases).
    pub stdin: String,
    /// Extra environment of the server process (`SOFTHSM2_CONF`).
    pub env: Vec<(String, String)>,
}

impl Default for ServerOpts {
    fn default() -> Self {
        let c = certs();
        ServerOpts {
            server_extra: "long_poll = 10\n".into(),
            security: format!(
                "allowed_ips = 127.0.0.0/8\nnew_token_allowed_ips = 127.0.0.1\n\
                 new_token_auth = {MINT_USER}:{MINT_PASSWORD}\ntoken_secret = {SECRET}\n\
                 token_secret1 = {OLD_SECRET}\nmax_token_age = 600\nallowed_filenames = .+\nmax_filesize = 64M\n"
            ),
            formats: format!("[format:gpg]\ntype = gpg\nkey = {}\n", c.join("gpg/secret.asc").display()),
            stdin: format!("{}\n", passphrase()),
            env: Vec::new(),
        }
    }
}

/// A running server; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    child: Option<Child>,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Its private directory (config, work_dir, audit log).
    pub dir: tempfile::TempDir,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Writes the config for `opts` into `dir`; returns its path.
pub fn write_config(dir: &Path, opts: &ServerOpts) -> PathBuf {
    let c = certs();
    let text = format!(
        "[server]\nlisten = 127.0.0.1\nport = 0\ntls_cert = {}\ntls_key = {}\nwork_dir = {}\n{}\n\
         [security]\n{}\n[logging]\nlevel = debug\naudit_log = {}\n\n{}",
        c.join("server-chain.pem").display(),
        c.join("server.key").display(),
        dir.join("work").display(),
        opts.server_extra,
        opts.security,
        dir.join("audit.log").display(),
        opts.formats
    );
    let path = dir.join("signing.ini");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Runs `signing-server ARGS` with `stdin` to completion (for start-up failures).
pub fn run_server_to_end(args: &[&std::ffi::OsStr], stdin: &str) -> (ExitStatus, String) {
    let mut child = Command::new(bin("signing-server"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn signing-server");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .ok();
    let out = child.wait_with_output().expect("wait");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status, text)
}

impl Server {
    /// Starts a server and waits until /health answers `ok`.
    pub fn start(opts: &ServerOpts) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(dir.path(), opts);
        Server::spawn(config, dir, opts)
    }

    /// Runs the server on `config`, its private directory being `dir`.
    pub fn spawn(config: PathBuf, dir: tempfile::TempDir, opts: &ServerOpts) -> Server {
        let mut child = Command::new(bin("signing-server"))
            .arg(&config)
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn signing-server");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(opts.stdin.as_bytes())
            .expect("write passphrases");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        {
            let mut err = child.stderr.take().expect("stderr");
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .expect("lock")
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(u) = l.strip_prefix("listening on ") {
                        break u.to_string();
                    }
                }
                _ => {
                    let status = child.wait().ok();
                    panic!(
                        "server did not start ({status:?}): {}",
                        stderr.lock().expect("lock")
                    );
                }
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let server = Server {
            child: Some(child),
            url,
            dir,
            stderr,
        };
        let healthy = wait_until(Duration::from_secs(30), || {
            let r = server.client().get(format!("{}/health", server.url)).send();
            r.is_ok_and(|r| r.status() == 200)
        });
        assert!(healthy, "server never became healthy: {}", server.stderr());
        server
    }

    /// What the server logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// The work_dir.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The audit log's text.
    pub fn audit(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default()
    }

    /// A client from 127.0.0.1.
    pub fn client(&self) -> reqwest::blocking::Client {
        client_from("127.0.0.1")
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        child.wait().expect("wait")
    }

    /// `GET /health`, as JSON.
    pub fn health(&self) -> serde_json::Value {
        self.client()
            .get(format!("{}/health", self.url))
            .send()
            .expect("GET /health")
            .json()
            .expect("/health is JSON")
    }

    /// A metric's value from /metrics (the first sample line starting with `prefix`).
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        let text = self
            .client()
            .get(format!("{}/metrics", self.url))
            .send()
            .ok()?
            .text()
            .ok()?;
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Mints a token for `ip` over HTTP, as the token-issuing host does.
    pub fn mint(&self, ip: &str, duration: u64) -> String {
        let r = self
            .client()
            .post(format!("{}/token", self.url))
            .basic_auth(MINT_USER, Some(MINT_PASSWORD))
            .form(&[("slave_ip", ip), ("duration", &duration.to_string())])
            .send()
            .expect("POST /token");
        assert_eq!(r.status(), 200, "minting failed");
        r.text().expect("token")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            if wait_until(Duration::from_secs(10), || {
                matches!(child.try_wait(), Ok(Some(_)))
            }) {
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A client trusting the test CA, connecting from `local_ip` (127.0.0.x).
pub fn client_from(local_ip: &str) -> reqwest::blocking::Client {
    let ca = std::fs::read(certs().join("ca.pem")).expect("ca.pem");
    reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA"))
        .local_address(local_ip.parse::<IpAddr>().expect("ip"))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Unix time now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Mints a token locally with `secret` (for tokens the server would never mint:
/// expired, not yet valid, foreign secret).
pub fn token_with(secret: &str, ip: &str, from: u64, to: u64) -> String {
    signing_server::auth::mint(
        &secrecy::SecretString::from(secret.to_string()),
        ip.parse().expect("ip"),
        from,
        to,
        None,
    )
}

/// Hex sha256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// Hex sha1.
pub fn sha1_hex(data: &[u8]) -> String {
    hex::encode(sha1::Sha1::digest(data))
}

/// Deterministic pseudo-random bytes (xorshift), so fixtures differ per seed.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// An upload as the protocol describes it.
pub struct Upload<'a> {
    /// Token text.
    pub token: &'a str,
    /// Filename label.
    pub filename: &'a str,
    /// The file.
    pub data: &'a [u8],
    /// `sha256` field (None = omit).
    pub sha256: Option<String>,
    /// `sha1` field (None = omit).
    pub sha1: Option<String>,
}

impl<'a> Upload<'a> {
    /// A correct upload of `data` with its sha256.
    pub fn new(token: &'a str, filename: &'a str, data: &'a [u8]) -> Upload<'a> {
        Upload {
            token,
            filename,
            data,
            sha256: Some(sha256_hex(data)),
            sha1: None,
        }
    }

    /// Sends it to `POST {url}/sign/{format}`; returns (status, body).
    pub fn send(
        &self,
        client: &reqwest::blocking::Client,
        url: &str,
        format: &str,
    ) -> (u16, String) {
        use reqwest::blocking::multipart::{Form, Part};
        let mut form = Form::new()
            .text("token", self.token.to_string())
            .text("nonce", "")
            .text("filename", self.filename.to_string());
        if let Some(h) = &self.sha1 {
            form = form.text("sha1", h.clone());
        }
        if let Some(h) = &self.sha256 {
            form = form.text("sha256", h.clone());
        }
        form = form.part(
            "filedata",
            Part::bytes(self.data.to_vec()).file_name("upload"),
        );
        let r = client
            .post(format!("{url}/sign/{format}"))
            .multipart(form)
            .send()
            .expect("POST /sign");
        let status = r.status().as_u16();
        (status, r.text().unwrap_or_default())
    }
}

/// `GET {url}/sign/{format}/{hash}` until it is no longer pending; returns
/// (status, headers, body).
pub fn fetch(
    client: &reqwest::blocking::Client,
    url: &str,
    format: &str,
    hash: &str,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client
            .get(format!("{url}/sign/{format}/{hash}"))
            .send()
            .expect("GET /sign");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().expect("body").to_vec();
        if status == 404 && headers.contains_key("x-pending") && Instant::now() < deadline {
            continue;
        }
        return (status, headers, body);
    }
}

/// Runs a command; returns (success, stdout+stderr).
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `gpgv` against the test key: whether `sig` is a good signature of `file`.
pub fn gpgv(sig: &Path, file: &Path) -> (bool, String) {
    run(Command::new("gpgv")
        .arg("--keyring")
        .arg(certs().join("gpg/public.gpg"))
        .arg(sig)
        .arg(file))
}

/// Signs `body` with the gpg-type `format` on `s` as a build machine from
/// 127.0.0.1 would (a fresh token; the upload must get 202, the fetch 200),
/// then checks the signature with [`gpgv`]: its (success, output).
pub fn gpg_sign_and_verify(s: &Server, format: &str, body: &[u8]) -> (bool, String) {
    let token = s.mint("127.0.0.1", 60);
    let (status, text) = Upload::new(&token, "f.bin", body).send(&s.client(), &s.url, format);
    assert_eq!(status, 202, "{text}");
    let (status, _, sig) = fetch(&s.client(), &s.url, format, &sha256_hex(body));
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().expect("temp dir");
    let (f, asc) = (dir.path().join("f"), dir.path().join("f.asc"));
    std::fs::write(&f, body).expect("write");
    std::fs::write(&asc, &sig).expect("write");
    gpgv(&asc, &f)
}

impl Server {
    /// Sends a signal (`HUP`, `TERM`, `KILL`…) to the server.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits (bounded) for the server to exit; its status, or None if still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let mut status = None;
        wait_until(limit, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Waits (bounded) until the server's log contains `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        wait_until(limit, || self.stderr().contains(needle))
    }

    /// The config file it runs on.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("signing.ini")
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

impl Server {
    /// Starts a server whose private directory is `dir` (kept by the caller,
    /// e.g. to restart on the same work_dir).
    pub fn start_in(dir: tempfile::TempDir, opts: &ServerOpts) -> Server {
        let config = write_config(dir.path(), opts);
        Server::spawn(config, dir, opts)
    }

    /// Stops the server with SIGKILL (no clean-up on its side) and hands its
    /// directory back.
    pub fn kill9(mut self) -> tempfile::TempDir {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }
}

/// A reader that hands out its first `open` bytes, then blocks until the
/// gate is opened (or forever): a slow client, held by the test.
pub struct GatedReader {
    data: Vec<u8>,
    pos: usize,
    open: usize,
    gate: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

/// Opens the gate of a [`GatedReader`].
#[derive(Clone)]
pub struct Gate(std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    /// Lets the reader go on.
    pub fn open(&self) {
        *self.0 .0.lock().expect("lock") = true;
        self.0 .1.notify_all();
    }
}

impl GatedReader {
    /// A reader of `data` that stalls after `open` bytes until the gate opens.
    pub fn new(data: Vec<u8>, open: usize) -> (GatedReader, Gate) {
        let gate = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        (
            GatedReader {
                data,
                pos: 0,
                open,
                gate: gate.clone(),
            },
            Gate(gate),
        )
    }
}

impl Read for GatedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.open {
            let (lock, cvar) = &*self.gate;
            let mut opened = lock.lock().expect("lock");
            while !*opened {
                opened = cvar.wait(opened).expect("wait");
            }
        }
        let limit = if self.pos < self.open {
            self.open
        } else {
            self.data.len()
        };
        let n = buf.len().min(limit - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A TLS connection to `s` trusting the test CA, as a raw byte stream (read and write
/// time out after 30 s): for requests no HTTP client would send.
pub fn raw_tls(s: &Server) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    raw_tls_from(s, "127.0.0.1")
}

/// A TCP connection to `s` from the local address `local_ip` (127.0.0.x acts
/// as another machine); read and write time out after 30 s.
pub fn tcp_from(s: &Server, local_ip: &str) -> std::net::TcpStream {
    let addr: std::net::SocketAddr = s.url.trim_start_matches("https://").parse().expect("addr");
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let local: std::net::SocketAddr = format!("{local_ip}:0").parse().expect("local address");
    sock.bind(&local.into()).expect("bind");
    sock.connect(&addr.into()).expect("connect");
    let tcp: std::net::TcpStream = sock.into();
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    tcp.set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    tcp
}

/// [`raw_tls`] from the local address `local_ip`.
pub fn raw_tls_from(
    s: &Server,
    local_ip: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    tls_on(tcp_from(s, local_ip))
}

/// A TLS client (trusting the test CA, for the name 127.0.0.1) on `tcp`: its
/// handshake starts with the first read or write.
pub fn tls_on(
    tcp: std::net::TcpStream,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use rustls_pki_types::pem::PemObject as _;
    let ca = std::fs::read(certs().join("ca.pem")).expect("ca.pem");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.expect("CA certificate")).expect("root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(cfg),
        "127.0.0.1".try_into().expect("name"),
    )
    .expect("client");
    rustls::StreamOwned::new(conn, tcp)
}
