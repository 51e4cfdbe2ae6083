//! The C2SP tlog-checkpoint body: the origin, the tree size (decimal, no
//! leading zeros) and the base64 root hash, one per line, each ending in a
//! newline. We write no extension lines and ignore any we read.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::tlog::hash::Hash;

/// A tree head: which log, how many entries, the root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin (its name).
    pub origin: String,
    /// Entries in the tree.
    pub size: u64,
    /// The RFC 6962 root hash.
    pub root: Hash,
}

impl Checkpoint {
    /// The note text.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses a note text (already verified).
    pub fn parse(text: &str) -> Result<Checkpoint, String> {
        let mut lines = text.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err("a checkpoint has three lines: origin, size, root hash".into());
        };
        if origin.is_empty() {
            return Err("a checkpoint's origin is empty".into());
        }
        let bad_size = || format!("checkpoint size {size:?} is not a decimal number");
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(bad_size());
        }
        let size: u64 = size.parse().map_err(|_| bad_size())?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| format!("checkpoint root {root:?} is not a base64 SHA-256 hash"))?;
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_the_spec_example() {
        let text =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let c = Checkpoint::parse(text).unwrap();
        assert_eq!(c.origin, "example.com/behind-the-sofa");
        assert_eq!(c.size, 20852163);
        assert_eq!(c.text(), text);
        for bad in [
            "o\n012\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n1\nCsUYapGG\n",
            "\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n1\n",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
    }
}
