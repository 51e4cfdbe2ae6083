//! RFC 6962 proofs: inclusion of a leaf in a tree, consistency of a tree
//! with a larger one. Proofs are made from a tree's tiles
//! ([`super::tile::Hashes`]) and checked with RFC 9162's algorithms
//! (section 2.1.3.2 and 2.1.4.2), which know nothing of tiles: a proof made
//! from tiles that do not match the checkpoint fails the check.

use crate::tlog::hash::{node_hash, split, Hash};
use crate::tlog::tile::{Hashes, TileSource};

/// The inclusion proof of leaf `index` in the tree `hashes` reads.
pub fn prove_inclusion<S: TileSource>(
    hashes: &mut Hashes<'_, S>,
    index: u64,
) -> Result<Vec<Hash>, String> {
    let size = hashes.size();
    if index >= size {
        return Err(format!("leaf {index} is not in a tree of {size}"));
    }
    let mut proof = Vec::new();
    // PATH(m, D[lo:hi]), iteratively: siblings are collected leaf-first.
    let (mut lo, mut hi) = (0u64, size);
    let mut siblings = Vec::new();
    while hi - lo > 1 {
        let k = split(hi - lo);
        if index < lo + k {
            siblings.push((lo + k, hi));
            hi = lo + k;
        } else {
            siblings.push((lo, lo + k));
            lo += k;
        }
    }
    for (a, b) in siblings.into_iter().rev() {
        proof.push(hashes.range(a, b)?);
    }
    Ok(proof)
}

/// Checks that `leaf` (a leaf hash) is leaf `index` of the tree of `size`
/// with root `root`, by `proof`.
pub fn check_inclusion(
    proof: &[Hash],
    index: u64,
    size: u64,
    leaf: &Hash,
    root: &Hash,
) -> Result<(), String> {
    if index >= size {
        return Err(format!("leaf {index} is not in a tree of {size}"));
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err("inclusion proof too long".into());
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err("inclusion proof too short".into());
    }
    if &r != root {
        return Err(format!(
            "leaf {index} is not in the tree of {size} with that root (inclusion proof fails)"
        ));
    }
    Ok(())
}

/// The consistency proof from the tree of `old` leaves to the tree `hashes`
/// reads (`0 < old ≤ size`).
pub fn prove_consistency<S: TileSource>(
    hashes: &mut Hashes<'_, S>,
    old: u64,
) -> Result<Vec<Hash>, String> {
    let size = hashes.size();
    if old == 0 || old > size {
        return Err(format!("no consistency proof from {old} to {size}"));
    }
    // SUBPROOF(m, D[lo:hi], b), iteratively.
    let (mut m, mut lo, mut hi, mut whole) = (old, 0u64, size, true);
    let mut parts = Vec::new();
    loop {
        let n = hi - lo;
        if m == n {
            if !whole {
                parts.push((lo, hi));
            }
            break;
        }
        let k = split(n);
        if m <= k {
            parts.push((lo + k, hi));
            hi = lo + k;
        } else {
            parts.push((lo, lo + k));
            m -= k;
            lo += k;
            whole = false;
        }
    }
    // The recursion appends on the way out: innermost first.
    let mut proof = Vec::new();
    for (a, b) in parts.into_iter().rev() {
        proof.push(hashes.range(a, b)?);
    }
    Ok(proof)
}

/// Checks that the tree of `old` leaves with root `old_root` is a prefix of
/// the tree of `size` leaves with root `root`, by `proof`.
pub fn check_consistency(
    proof: &[Hash],
    old: u64,
    size: u64,
    old_root: &Hash,
    root: &Hash,
) -> Result<(), String> {
    let inconsistent = || format!("the tree of {old} is not a prefix of the tree of {size}");
    if old > size {
        return Err(format!("a tree of {old} cannot grow into one of {size}"));
    }
    if old == size {
        return if proof.is_empty() && old_root == root {
            Ok(())
        } else {
            Err(inconsistent())
        };
    }
    if old == 0 {
        // Every tree extends the empty one.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(inconsistent())
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(inconsistent());
    };
    let (mut f, mut s) = (old - 1, size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return Err(inconsistent());
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if &fr == old_root && &sr == root && s == 0 {
        Ok(())
    } else {
        Err(inconsistent())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::hash::root_of;
    use crate::tlog::hash::tests::{h, reference_leaves, ROOTS};
    use crate::tlog::tile::tests::Mem;

    #[test]
    fn reference_inclusion_proofs() {
        let leaves = reference_leaves();
        let mut src = Mem(leaves.clone());
        let mut hashes = Hashes::new(8, &mut src);
        // Published proofs for leaves 0 and 5 of the 8-leaf reference tree.
        let p0 = prove_inclusion(&mut hashes, 0).unwrap();
        assert_eq!(
            p0,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ]
        );
        let p5 = prove_inclusion(&mut hashes, 5).unwrap();
        assert_eq!(
            p5,
            vec![
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ]
        );
        let root = h(ROOTS[8]);
        check_inclusion(&p5, 5, 8, &leaves[5], &root).unwrap();
        assert!(check_inclusion(&p5, 4, 8, &leaves[5], &root).is_err());
        assert!(check_inclusion(&p5, 5, 8, &leaves[4], &root).is_err());
        assert!(check_inclusion(&p5[..2], 5, 8, &leaves[5], &root).is_err());
    }

    #[test]
    fn reference_consistency_proofs() {
        let leaves = reference_leaves();
        let mut src = Mem(leaves);
        let mut hashes = Hashes::new(8, &mut src);
        let p = prove_consistency(&mut hashes, 6).unwrap();
        assert_eq!(
            p,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ]
        );
        check_consistency(&p, 6, 8, &h(ROOTS[6]), &h(ROOTS[8])).unwrap();
        assert!(check_consistency(&p, 6, 8, &h(ROOTS[5]), &h(ROOTS[8])).is_err());
        let mut hashes = Hashes::new(5, &mut src);
        let p = prove_consistency(&mut hashes, 2).unwrap();
        assert_eq!(
            p,
            vec![
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ]
        );
        check_consistency(&p, 2, 5, &h(ROOTS[2]), &h(ROOTS[5])).unwrap();
    }

    #[test]
    fn every_proof_of_every_size_checks_and_a_wrong_root_fails() {
        let leaves: Vec<Hash> = (0..600u32)
            .map(|i| crate::tlog::leaf_hash(&i.to_le_bytes()))
            .collect();
        let mut src = Mem(leaves.clone());
        for size in [1u64, 2, 3, 7, 8, 9, 255, 256, 257, 300, 511, 512, 513, 600] {
            let root = root_of(&leaves[..size as usize]);
            let mut hashes = Hashes::new(size, &mut src);
            for i in (0..size).step_by(7).chain([size - 1]) {
                let p = prove_inclusion(&mut hashes, i).unwrap();
                check_inclusion(&p, i, size, &leaves[i as usize], &root).unwrap();
                let mut bad = root;
                bad[0] ^= 1;
                assert!(check_inclusion(&p, i, size, &leaves[i as usize], &bad).is_err());
            }
            for old in (1..=size).step_by(13).chain([size]) {
                let old_root = root_of(&leaves[..old as usize]);
                let p = prove_consistency(&mut hashes, old).unwrap();
                check_consistency(&p, old, size, &old_root, &root)
                    .unwrap_or_else(|e| panic!("{old} → {size}: {e}"));
                let mut bad = old_root;
                bad[31] ^= 1;
                assert!(check_consistency(&p, old, size, &bad, &root).is_err());
            }
        }
    }
}
