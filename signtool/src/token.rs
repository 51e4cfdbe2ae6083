//! `signtool token`: mints a token with `POST /token` (HTTP Basic auth, form
//! `slave_ip`, `duration` and optionally `formats`), as the token-issuing host
//! does for build machines.
//!
//! The password comes from `--password-file` or a no-echo prompt on the
//! terminal; it is never taken from argv or the environment, and never
//! printed. Hosts are tried in the order given, moving on only on connection
//! errors, timeouts and 5xx.

use std::io::IsTerminal;
use std::path::Path;

use crate::cli::{parse_host, TokenArgs};
use crate::{EXIT_FAILED, EXIT_LOCAL, EXIT_OK};

/// Runs the command; returns the exit code.
pub async fn run(args: TokenArgs) -> u8 {
    match mint(&args).await {
        Ok(token) => match write_token(&token, args.output.as_deref()) {
            Ok(()) => EXIT_OK,
            Err(e) => {
                eprintln!("signtool token: {e}");
                EXIT_LOCAL
            }
        },
        Err((code, msg)) => {
            eprintln!("signtool token: {msg}");
            code
        }
    }
}

fn password(args: &TokenArgs) -> Result<String, String> {
    if let Some(path) = &args.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
        return Ok(text.lines().next().unwrap_or("").to_string());
    }
    if !std::io::stdin().is_terminal() {
        return Err("no --password-file and no terminal to ask the password on".into());
    }
    rpassword::prompt_password(format!("Password for {}: ", args.user))
        .map_err(|e| format!("cannot read the password: {e}"))
}

async fn mint(args: &TokenArgs) -> Result<String, (u8, String)> {
    let local = |m: String| (EXIT_LOCAL, m);
    let mut urls = Vec::new();
    for h in &args.hosts {
        let (formats, url) = parse_host(h).map_err(local)?;
        if !formats.is_empty() {
            return Err(local(format!("bad host {h:?}: expected HOST[:PORT]")));
        }
        urls.push(url);
    }
    let password = password(args).map_err(local)?;
    let client = crate::tls::client(&args.net).map_err(|e| local(format!("{e:#}")))?;
    let read_timeout = crate::tls::secs(args.net.read_timeout, "--read-timeout")
        .map_err(|e| local(e.to_string()))?;
    let mut tried = Vec::new();
    for url in &urls {
        let mut form = vec![
            ("slave_ip", args.slave_ip.to_string()),
            ("duration", args.duration.to_string()),
        ];
        if let Some(formats) = &args.formats {
            form.push(("formats", formats.clone()));
        }
        let r = client
            .post(format!("{url}/token"))
            .basic_auth(&args.user, Some(&password))
            .form(&form)
            .timeout(read_timeout)
            .send()
            .await;
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                tried.push(format!("{url}: {}", crate::transfer::describe(&e)));
                continue;
            }
        };
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        let line = body.lines().next().unwrap_or("").trim().to_string();
        match status.as_u16() {
            200 if !body.trim().is_empty() => return Ok(body.trim().to_string()),
            401 => {
                return Err((
                    EXIT_FAILED,
                    format!(
                        "bad credentials: {url} refused user {:?} with that password (401 {line})",
                        args.user
                    ),
                ))
            }
            403 if line.contains("may mint tokens only for") => {
                return Err((EXIT_FAILED, format!("{url} refused: 403 {line}")))
            }
            403 => {
                return Err((
                    EXIT_FAILED,
                    format!("{url} refused: 403 {line} (is this host in new_token_allowed_ips?)"),
                ))
            }
            s if (400..500).contains(&s) => {
                return Err((EXIT_FAILED, format!("{url} refused: {s} {line}")))
            }
            s => tried.push(format!("{url}: {s} {line}")),
        }
    }
    Err((EXIT_FAILED, format!("no token: {}", tried.join("; "))))
}

fn write_token(token: &str, output: Option<&Path>) -> Result<(), String> {
    let Some(path) = output else {
        println!("{token}");
        return Ok(());
    };
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    // NamedTempFile is created 0600: the token never sits world-readable.
    let mut t = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    t.write_all(token.as_bytes()).map_err(err)?;
    t.as_file().sync_all().map_err(err)?;
    t.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    t.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}
