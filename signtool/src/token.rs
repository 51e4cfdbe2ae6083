//! `signtool token`: mints a token with `POST /token` (HTTP Basic auth, form
//! `slave_ip`, `duration`, optionally `formats` and the one-time code `otp`),
//! as the token-issuing host does for build machines; or, with `--approve`,
//! turns someone else's approval request into a token (`POST /token/approve`).
//!
//! The password comes from `--password-file` or a no-echo prompt on the
//! terminal; it is never taken from argv or the environment, and never
//! printed. The one-time code comes from `--otp`, or from the terminal when
//! a server says it needs one. Hosts are tried in the order given, moving on
//! only on connection errors, timeouts and 5xx.

use std::io::{IsTerminal, Read as _};
use std::path::Path;

use crate::cli::{parse_host, TokenArgs};
use crate::{EXIT_APPROVAL, EXIT_FAILED, EXIT_LOCAL, EXIT_OK};

/// What a server gave.
enum Minted {
    Token(String),
    /// `202`: the request text a second person must approve.
    Request(String),
}

/// Runs the command; returns the exit code.
pub async fn run(args: TokenArgs) -> u8 {
    match mint(&args).await {
        Ok(Minted::Token(token)) => match write_token(&token, args.output.as_deref()) {
            Ok(()) => EXIT_OK,
            Err(e) => {
                eprintln!("signtool token: {e}");
                EXIT_LOCAL
            }
        },
        Ok(Minted::Request(text)) => {
            println!("{text}");
            eprintln!(
                "signtool token: the formats asked for need a second person's approval; \
                 the request above (valid for one hour) is theirs to approve with \
                 `signtool token --approve FILE` (no token was written)"
            );
            EXIT_APPROVAL
        }
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

/// The request text of `--approve FILE` (`-`: stdin).
fn request_text(path: &Path) -> Result<String, String> {
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    read.map_err(|e| format!("cannot read the request {}: {e}", path.display()))?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    line.map(str::to_string)
        .ok_or_else(|| format!("{}: no request text in it", path.display()))
}

/// A request's form fields.
type Fields = Vec<(&'static str, String)>;

/// The path and form of the request: minting, or approving.
fn form(args: &TokenArgs) -> Result<(&'static str, Fields), String> {
    if let Some(path) = &args.approve {
        return Ok(("/token/approve", vec![("request", request_text(path)?)]));
    }
    let (Some(ip), Some(duration)) = (args.slave_ip, args.duration) else {
        return Err("--slave-ip and --duration are needed to mint".into());
    };
    let mut form = vec![
        ("slave_ip", ip.to_string()),
        ("duration", duration.to_string()),
    ];
    if let Some(formats) = &args.formats {
        form.push(("formats", formats.clone()));
    }
    Ok(("/token", form))
}

async fn mint(args: &TokenArgs) -> Result<Minted, (u8, String)> {
    let local = |m: String| (EXIT_LOCAL, m);
    let mut urls = Vec::new();
    for h in &args.hosts {
        let (formats, url) = parse_host(h).map_err(local)?;
        if !formats.is_empty() {
            return Err(local(format!("bad host {h:?}: expected HOST[:PORT]")));
        }
        urls.push(url);
    }
    let (path, form) = form(args).map_err(local)?;
    let password = password(args).map_err(local)?;
    let mut otp = args.otp.clone();
    let client = crate::tls::client(&args.net).map_err(|e| local(format!("{e:#}")))?;
    let read_timeout = crate::tls::secs(args.net.read_timeout, "--read-timeout")
        .map_err(|e| local(e.to_string()))?;
    let mut tried = Vec::new();
    let mut hosts = urls.iter();
    let mut url = hosts.next();
    while let Some(u) = url {
        let mut sent = form.clone();
        if let Some(code) = &otp {
            sent.push(("otp", code.trim().to_string()));
        }
        let r = client
            .post(format!("{u}{path}"))
            .basic_auth(&args.user, Some(&password))
            .form(&sent)
            .timeout(read_timeout)
            .send()
            .await;
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                tried.push(format!("{u}: {}", crate::session::describe(&e)));
                url = hosts.next();
                continue;
            }
        };
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        let line = body.lines().next().unwrap_or("").trim().to_string();
        match status.as_u16() {
            200 if !body.trim().is_empty() => return Ok(Minted::Token(body.trim().to_string())),
            202 if !body.trim().is_empty() => return Ok(Minted::Request(body.trim().to_string())),
            401 if line.contains("one-time code: form field otp") && otp.is_none() => {
                // Asked on the terminal only, then the same host again.
                if !std::io::stdin().is_terminal() {
                    return Err((
                        EXIT_FAILED,
                        format!(
                            "{u}: user {:?} needs a one-time code: give --otp CODE",
                            args.user
                        ),
                    ));
                }
                let code = rpassword::prompt_password(format!("One-time code for {}: ", args.user))
                    .map_err(|e| local(format!("cannot read the one-time code: {e}")))?;
                otp = Some(code);
                continue;
            }
            401 if line.contains("one-time code") => {
                return Err((
                    EXIT_FAILED,
                    format!("{u} refused the one-time code: 401 {line}"),
                ))
            }
            401 => {
                return Err((
                    EXIT_FAILED,
                    format!(
                        "bad credentials: {u} refused user {:?} with that password (401 {line})",
                        args.user
                    ),
                ))
            }
            403 if line.contains("may mint tokens only for") || args.approve.is_some() => {
                return Err((EXIT_FAILED, format!("{u} refused: 403 {line}")))
            }
            403 => {
                return Err((
                    EXIT_FAILED,
                    format!("{u} refused: 403 {line} (is this host in new_token_allowed_ips?)"),
                ))
            }
            s if (400..500).contains(&s) => {
                return Err((EXIT_FAILED, format!("{u} refused: {s} {line}")))
            }
            s => tried.push(format!("{u}: {s} {line}")),
        }
        url = hosts.next();
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
