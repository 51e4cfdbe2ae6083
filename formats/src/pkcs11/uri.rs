//! RFC 7512 PKCS#11 URIs: which module, token and key object a format signs with.
//!
//! What it does: parses `pkcs11:token=release;object=authenticode-2026?module-path=/usr/lib/…`
//! into a [`Pkcs11Uri`], percent-decoding every value. The path attributes `token`,
//! `manufacturer`, `serial`, `model`, `slot-id`, `object`, `id` and `type` select the key;
//! the query attribute `module-path` names the module.
//!
//! Deliberately refused (with a message saying why): `pin-value` and `pin-source` (a PIN is a
//! secret, asked at start-up like a passphrase, never written in a config), `module-name`
//! (give the path), a `type` other than `private`, and any attribute this parser does not
//! know (a typo must not silently select another key).

use std::path::PathBuf;

/// A parsed `pkcs11:` URI. Every field is optional in the RFC; [`Pkcs11Uri::parse`]
/// requires `object` or `id` so that the key is named.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Pkcs11Uri {
    /// `token=`: the token label.
    pub token: Option<String>,
    /// `manufacturer=`: the token's manufacturer ID.
    pub manufacturer: Option<String>,
    /// `serial=`: the token's serial number.
    pub serial: Option<String>,
    /// `model=`: the token's model.
    pub model: Option<String>,
    /// `slot-id=`: the slot number.
    pub slot_id: Option<u64>,
    /// `object=`: the key's CKA_LABEL.
    pub object: Option<String>,
    /// `id=`: the key's CKA_ID (bytes; percent-encoded in the URI).
    pub id: Option<Vec<u8>>,
    /// `?module-path=`: the PKCS#11 module (shared library).
    pub module_path: Option<PathBuf>,
}

/// The prefix that makes a `key =` value a PKCS#11 URI rather than a file name.
pub const SCHEME: &str = "pkcs11:";

/// Whether a `key =` value is a PKCS#11 URI.
pub fn is_pkcs11_uri(value: &str) -> bool {
    value
        .get(..SCHEME.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(SCHEME))
}

impl Pkcs11Uri {
    /// Parses `text`. The error is one sentence for the config's `file:line:`; it never
    /// repeats a `pin-value`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !is_pkcs11_uri(text) {
            return Err(format!(
                "{text:?} is not a PKCS#11 URI (it must start with pkcs11:)"
            ));
        }
        let rest = text.get(SCHEME.len()..).unwrap_or_default();
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut uri = Pkcs11Uri::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| format!("PKCS#11 URI attribute {attr:?} has no `=`"))?;
            let value = decode(name, value)?;
            let text = || {
                String::from_utf8(value.clone())
                    .map_err(|_| format!("PKCS#11 URI attribute {name} is not UTF-8"))
            };
            let slot = match name {
                "token" => &mut uri.token,
                "manufacturer" => &mut uri.manufacturer,
                "serial" => &mut uri.serial,
                "model" => &mut uri.model,
                "object" => &mut uri.object,
                "id" => {
                    once(name, uri.id.is_some())?;
                    uri.id = Some(value);
                    continue;
                }
                "slot-id" => {
                    once(name, uri.slot_id.is_some())?;
                    let n = text()?;
                    uri.slot_id = Some(
                        n.parse()
                            .map_err(|_| format!("PKCS#11 URI slot-id={n:?} is not a number"))?,
                    );
                    continue;
                }
                "type" => {
                    let t = text()?;
                    if t != "private" {
                        return Err(format!(
                            "PKCS#11 URI type={t:?}: a signing key is type=private (or leave type out)"
                        ));
                    }
                    continue;
                }
                "pin-value" | "pin-source" => return Err(pin_in_config(name)),
                _ => {
                    return Err(format!(
                        "PKCS#11 URI attribute {name:?} is not supported here (use token, \
                         manufacturer, serial, model, slot-id, object, id, type)"
                    ))
                }
            };
            once(name, slot.is_some())?;
            *slot = Some(text()?);
        }
        for attr in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|a| !a.is_empty())
        {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| format!("PKCS#11 URI query attribute {attr:?} has no `=`"))?;
            match name {
                "module-path" => {
                    once(name, uri.module_path.is_some())?;
                    let v = String::from_utf8(decode(name, value)?)
                        .map_err(|_| "PKCS#11 URI module-path is not UTF-8".to_string())?;
                    if v.is_empty() {
                        return Err("PKCS#11 URI module-path is empty".into());
                    }
                    uri.module_path = Some(PathBuf::from(v));
                }
                "pin-value" | "pin-source" => return Err(pin_in_config(name)),
                "module-name" => {
                    return Err(
                        "PKCS#11 URI module-name is not supported: give module-path (or \
                         `module =` in [pkcs11])"
                            .into(),
                    )
                }
                _ => {
                    return Err(format!(
                    "PKCS#11 URI query attribute {name:?} is not supported here (use module-path)"
                ))
                }
            }
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err("the PKCS#11 URI names no key: give object=LABEL and/or id=%01…".into());
        }
        Ok(uri)
    }

    /// What identifies the token (not the key) for asking its PIN once: the module
    /// and every token attribute given.
    pub fn token_identity(&self) -> (Option<PathBuf>, Vec<Option<String>>) {
        (
            self.module_path.clone(),
            vec![
                self.token.clone(),
                self.manufacturer.clone(),
                self.serial.clone(),
                self.model.clone(),
                self.slot_id.map(|n| n.to_string()),
            ],
        )
    }

    /// The token's name for a prompt and for messages (`release`, or `token` when the
    /// URI gives no label).
    pub fn token_name(&self) -> &str {
        self.token.as_deref().unwrap_or("token")
    }

    /// The key's name for messages: `object=LABEL`, `id=%01%02` or both.
    pub fn key_name(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.token {
            parts.push(format!("token={t}"));
        }
        if let Some(o) = &self.object {
            parts.push(format!("object={o}"));
        }
        if let Some(id) = &self.id {
            let hex: String = id.iter().map(|b| format!("%{b:02x}")).collect();
            parts.push(format!("id={hex}"));
        }
        parts.join(";")
    }
}

fn pin_in_config(name: &str) -> String {
    format!(
        "PKCS#11 URI {name}: a PIN does not belong in the config file; the server asks it at \
         start-up (terminal or stdin), like a passphrase"
    )
}

fn once(name: &str, seen: bool) -> Result<(), String> {
    if seen {
        Err(format!("PKCS#11 URI attribute {name} given twice"))
    } else {
        Ok(())
    }
}

/// Percent-decodes an attribute value (RFC 3986 `%XX`).
fn decode(name: &str, value: &str) -> Result<Vec<u8>, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("PKCS#11 URI attribute {name}: bad percent-encoding"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_of_the_docs() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=release;object=authenticode-2026?module-path=/usr/lib/softhsm/libsofthsm2.so",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("release"));
        assert_eq!(u.object.as_deref(), Some("authenticode-2026"));
        assert_eq!(
            u.module_path.as_deref(),
            Some(std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(u.id, None);
    }

    #[test]
    fn percent_encoding_ids_and_token_attributes() {
        let u = Pkcs11Uri::parse(
            "pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;serial=0123;token=my%20token;id=%01%a2;type=private;slot-id=7",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("my token"));
        assert_eq!(u.model.as_deref(), Some("SoftHSM v2"));
        assert_eq!(u.id, Some(vec![0x01, 0xa2]));
        assert_eq!(u.slot_id, Some(7));
        assert_eq!(u.module_path, None);
        assert_eq!(u.key_name(), "token=my token;id=%01%a2");
        assert!(is_pkcs11_uri("PKCS11:object=x"));
        assert!(!is_pkcs11_uri("keys/pkcs11.pem"));
    }

    #[test]
    fn pins_never_and_unknown_attributes_refused() {
        for bad in [
            "pkcs11:object=k;pin-value=1234",
            "pkcs11:object=k?pin-value=1234",
            "pkcs11:object=k?pin-source=file:/etc/pin",
        ] {
            let e = Pkcs11Uri::parse(bad).unwrap_err();
            assert!(e.contains("PIN does not belong"), "{e}");
            assert!(!e.contains("1234"), "the PIN is repeated: {e}");
        }
        for (bad, says) in [
            ("pkcs11:token=t", "names no key"),
            ("pkcs11:object=k;objcet=x", "not supported"),
            ("pkcs11:object=k;type=cert", "type=private"),
            ("pkcs11:object=k;object=j", "twice"),
            ("pkcs11:id=%0", "percent-encoding"),
            ("pkcs11:object=k?module-name=softhsm2", "module-name"),
            ("pkcs11:object=k?module-path=", "empty"),
            ("pkcs11:object", "no `=`"),
            ("pkcs11:slot-id=x;object=k", "not a number"),
            ("/etc/key.pem", "not a PKCS#11 URI"),
        ] {
            let e = Pkcs11Uri::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn one_token_identity_for_two_keys() {
        let a = Pkcs11Uri::parse("pkcs11:token=t;object=a?module-path=/m.so").unwrap();
        let b = Pkcs11Uri::parse("pkcs11:token=t;object=b?module-path=/m.so").unwrap();
        let c = Pkcs11Uri::parse("pkcs11:token=u;object=a?module-path=/m.so").unwrap();
        assert_eq!(a.token_identity(), b.token_identity());
        assert_ne!(a.token_identity(), c.token_identity());
    }
}
