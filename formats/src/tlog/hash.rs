//! RFC 6962 hashing: a leaf is `SHA-256(0x00 ‖ entry)`, an interior node
//! `SHA-256(0x01 ‖ left ‖ right)`, the empty tree `SHA-256("")`.

use sha2::{Digest, Sha256};

/// A SHA-256 hash of the tree.
pub type Hash = [u8; 32];

/// The hash of the leaf holding `entry`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// The hash of an interior node with children `left` and `right`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest(b"").into()
}

/// The largest power of two strictly below `n` (`n` ≥ 2).
pub fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The RFC 6962 Merkle tree hash of `hashes`, taken as the leaves (or as
/// equal-sized complete subtrees: the same recursion). Used for tiles (at
/// most 256 hashes) and tests, never over a whole large log.
pub fn root_of(hashes: &[Hash]) -> Hash {
    match hashes {
        [] => empty_root(),
        [one] => *one,
        _ => {
            let k = split(hashes.len() as u64) as usize;
            let (l, r) = hashes.split_at(k.min(hashes.len()));
            node_hash(&root_of(l), &root_of(r))
        }
    }
}

/// The root of a tree given the hashes of its maximal complete subtrees,
/// left to right (largest first): they fold from the right.
pub fn fold_subtrees(subtrees: &[Hash]) -> Hash {
    let mut it = subtrees.iter().rev();
    let Some(last) = it.next() else {
        return empty_root();
    };
    it.fold(*last, |acc, h| node_hash(h, &acc))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The leaves of the RFC 6962 reference tree (Certificate Transparency's
    /// test data), and its roots for the sizes 0 to 8.
    pub(crate) const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    pub(crate) const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    pub(crate) fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    pub(crate) fn reference_leaves() -> Vec<Hash> {
        LEAVES
            .iter()
            .map(|l| leaf_hash(&hex::decode(l).unwrap()))
            .collect()
    }

    #[test]
    fn roots_match_rfc6962_reference() {
        let leaves = reference_leaves();
        for n in 0..=8 {
            assert_eq!(hex::encode(root_of(&leaves[..n])), ROOTS[n], "size {n}");
        }
    }

    #[test]
    fn folding_complete_subtrees_gives_the_same_root() {
        let leaves = reference_leaves();
        // 7 = 4 + 2 + 1.
        let subtrees = [root_of(&leaves[..4]), root_of(&leaves[4..6]), leaves[6]];
        assert_eq!(hex::encode(fold_subtrees(&subtrees)), ROOTS[7]);
        assert_eq!(fold_subtrees(&[]), empty_root());
    }

    #[test]
    fn split_is_the_largest_power_of_two_below() {
        for (n, k) in [
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 4),
            (8, 4),
            (9, 8),
            (256, 128),
            (257, 256),
        ] {
            assert_eq!(split(n), k, "{n}");
        }
    }
}
