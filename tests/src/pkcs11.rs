//! SoftHSM2 for the PKCS#11 tests: a private token directory per test (`SOFTHSM2_CONF`
//! points at a config in a temporary directory, handed to the server in its
//! environment), tokens initialised with `softhsm2-util`, the TEST keys of `certs/`
//! imported into them (sensitive, so the certificates of `certs/` match), EC keys
//! generated on the token with `pkcs11-tool`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{certs, passphrase, run};

/// Debian's SoftHSM2 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of every test token.
pub const PIN: &str = "pin-7310-softhsm";
/// The security officer PIN of every test token.
const SO_PIN: &str = "so-pin-5521";

/// A SoftHSM2 token store of its own.
pub struct SoftHsm {
    /// Holds `softhsm2.conf` and `tokens/`.
    pub dir: tempfile::TempDir,
}

impl SoftHsm {
    /// An empty store; panics (loudly, never a silent skip) when SoftHSM2 is missing.
    pub fn new() -> SoftHsm {
        assert!(
            Path::new(MODULE).is_file(),
            "{MODULE} missing: run scripts/setup.sh (Debian packages softhsm2 and opensc)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("tokens")).expect("mkdir tokens");
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .expect("write softhsm2.conf");
        SoftHsm { dir }
    }

    /// The `SOFTHSM2_CONF` of this store.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    /// The token directory (move it away to "unplug" every token).
    pub fn tokens(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    /// The environment a server (or a tool) needs to see this store.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("SOFTHSM2_CONF".into(), self.conf().display().to_string())]
    }

    fn tool(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SOFTHSM2_CONF", self.conf());
        c
    }

    /// Initialises a token labelled `label` with [`PIN`].
    pub fn init_token(&self, label: &str) {
        let (ok, text) = run(self
            .tool("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", SO_PIN, "--pin", PIN]));
        assert!(ok, "softhsm2-util --init-token: {text}");
    }

    /// Imports the TEST key at `key` (an encrypted PEM of `certs/`) into `token` as
    /// `label` with CKA_ID `id` (hex): private key (sensitive) and public key.
    pub fn import(&self, token: &str, key: &Path, label: &str, id: &str) {
        let plain = self.dir.path().join("import.p8");
        let (ok, text) = run(Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
            .arg(key)
            .arg("-passin")
            .arg(format!("pass:{}", passphrase()))
            .arg("-out")
            .arg(&plain));
        assert!(ok, "openssl pkcs8 {}: {text}", key.display());
        let (ok, text) = run(self
            .tool("softhsm2-util")
            .arg("--import")
            .arg(&plain)
            .args(["--token", token, "--label", label, "--id", id, "--pin", PIN]));
        std::fs::remove_file(&plain).expect("remove the plain key");
        assert!(ok, "softhsm2-util --import: {text}");
    }

    /// Imports the unencrypted PEM key at `plain` into `token` as `label`, CKA_ID `id`.
    pub fn import_plain(&self, token: &str, plain: &Path, label: &str, id: &str) {
        let (ok, text) = run(self
            .tool("softhsm2-util")
            .arg("--import")
            .arg(plain)
            .args(["--token", token, "--label", label, "--id", id, "--pin", PIN]));
        assert!(ok, "softhsm2-util --import: {text}");
    }

    /// Generates a key pair on `token` (`spec`: `EC:prime256v1`, `rsa:2048`): the
    /// private key never exists outside the token.
    pub fn generate(&self, token: &str, spec: &str, label: &str, id: &str) {
        let (ok, text) = run(self
            .tool("pkcs11-tool")
            .args([
                "--module",
                MODULE,
                "--token-label",
                token,
                "--login",
                "--pin",
                PIN,
            ])
            .args([
                "--keypairgen",
                "--key-type",
                spec,
                "--label",
                label,
                "--id",
                id,
            ])
            .args(["--usage-sign", "--sensitive"]));
        assert!(ok, "pkcs11-tool --keypairgen: {text}");
    }

    /// The public key (PEM) of the key `id` on `token`, as the token shows it.
    pub fn public_pem(&self, token: &str, id: &str) -> String {
        let der = self.dir.path().join(format!("pub-{id}.der"));
        let (ok, text) = run(self
            .tool("pkcs11-tool")
            .args(["--module", MODULE, "--token-label", token])
            .args(["--read-object", "--type", "pubkey", "--id", id, "-o"])
            .arg(&der));
        assert!(ok, "pkcs11-tool --read-object: {text}");
        let (ok, pem) = run(Command::new("openssl")
            .args(["pkey", "-pubin", "-inform", "DER", "-in"])
            .arg(&der));
        assert!(ok, "openssl pkey: {pem}");
        pem
    }

    /// What `pkcs11-tool -O` lists of `token`'s objects (logged in).
    pub fn objects(&self, token: &str) -> String {
        let (ok, text) = run(self.tool("pkcs11-tool").args([
            "--module",
            MODULE,
            "--token-label",
            token,
            "--login",
            "--pin",
            PIN,
            "-O",
        ]));
        assert!(ok, "pkcs11-tool -O: {text}");
        text
    }
}

impl Default for SoftHsm {
    fn default() -> Self {
        SoftHsm::new()
    }
}

/// `pkcs11:token=TOKEN;object=LABEL?module-path=…` for a test key.
pub fn uri(token: &str, object: &str) -> String {
    format!("pkcs11:token={token};object={object}?module-path={MODULE}")
}

/// A test key file of `certs/` (`authenticode/rsa.key`…).
pub fn cert_file(rel: &str) -> PathBuf {
    certs().join(rel)
}

/// The RSA key of the TEST OpenPGP certificate `certs/gpg-rsa` (its primary key, which
/// signs) as an unencrypted PKCS#8 PEM file at `out`, to import into a token: the
/// certificate `certs/gpg-rsa/public.asc` then names the token key.
pub fn gpg_rsa_key_as_pem(out: &Path) {
    use openssl::bn::{BigNum, BigNumContext};
    use pgp::composed::{Deserializable, SignedSecretKey};
    use pgp::types::{Password, PlainSecretParams};
    let text = std::fs::read(certs().join("gpg-rsa/secret.asc")).expect("certs/gpg-rsa/secret.asc");
    let (key, _) = SignedSecretKey::from_armor_single(text.as_slice()).expect("parse the key");
    let pw = Password::from(passphrase().as_bytes());
    let pem = key
        .primary_key
        .unlock(&pw, |_, secret| {
            let PlainSecretParams::RSA(s) = secret else {
                panic!("certs/gpg-rsa is not an RSA key")
            };
            let (d, p, q, _) = s.to_bytes();
            let bn = |b: &[u8]| BigNum::from_slice(b).expect("bignum");
            let (d, p, q) = (bn(&d), bn(&p), bn(&q));
            let mut ctx = BigNumContext::new().expect("bn ctx");
            let mut n = BigNum::new().expect("bn");
            n.checked_mul(&p, &q, &mut ctx).expect("n");
            // GnuPG makes every RSA key with e = 65537; check_key below proves it.
            let e = BigNum::from_u32(65537).expect("e");
            let one = BigNum::from_u32(1).expect("1");
            let (mut p1, mut q1) = (BigNum::new().expect("bn"), BigNum::new().expect("bn"));
            p1.checked_sub(&p, &one).expect("p-1");
            q1.checked_sub(&q, &one).expect("q-1");
            let (mut dp, mut dq, mut qinv) = (
                BigNum::new().expect("bn"),
                BigNum::new().expect("bn"),
                BigNum::new().expect("bn"),
            );
            dp.nnmod(&d, &p1, &mut ctx).expect("dp");
            dq.nnmod(&d, &q1, &mut ctx).expect("dq");
            qinv.mod_inverse(&q, &p, &mut ctx).expect("qinv");
            let rsa = openssl::rsa::Rsa::from_private_components(n, e, d, p, q, dp, dq, qinv)
                .expect("RSA key");
            assert!(
                rsa.check_key().expect("check"),
                "the converted key is inconsistent"
            );
            Ok(openssl::pkey::PKey::from_rsa(rsa)
                .expect("pkey")
                .private_key_to_pem_pkcs8()
                .expect("pem"))
        })
        .expect("unlock")
        .expect("convert");
    std::fs::write(out, pem).expect("write the PEM key");
}
