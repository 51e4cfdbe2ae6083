//! Checking a whole tree from its tiles: every tile and entry bundle of a
//! tree of a given size is read once, each full tile checked against its
//! hash in the level above, each bundle against its level-0 tile, and the
//! root against the checkpoint's. The server does it at start-up (its own
//! directory), signtool's `log verify` over HTTPS, a monitor the same way.

use crate::tlog::hash::{fold_subtrees, root_of, split, Hash};
use crate::tlog::leaf_hash;
use crate::tlog::tile::{self, Kind, Tile, TileSource, WIDTH};

/// The right edge of a checked tree: what a writer needs to append to it.
#[derive(Debug, Default)]
pub struct Edge {
    /// The hashes of the partial tile of each level (fewer than 256 each).
    pub hashes: [Vec<Hash>; 8],
    /// The partial entry bundle's bytes.
    pub bundle: Vec<u8>,
}

impl Edge {
    /// The root of the tree this edge ends.
    pub fn root(&self) -> Hash {
        let mut subtrees = Vec::new();
        for level in self.hashes.iter().rev() {
            // A partial tile's hashes split into maximal power-of-two runs.
            let mut rest = level.as_slice();
            while !rest.is_empty() {
                let n = rest.len() as u64;
                let run = if n.is_power_of_two() { n } else { split(n) } as usize;
                let (head, tail) = rest.split_at(run.min(rest.len()));
                subtrees.push(root_of(head));
                rest = tail;
            }
        }
        fold_subtrees(&subtrees)
    }
}

/// Reads and checks every tile and entry bundle of the tree of `size`
/// leaves with root `root` from `source`; `each(index, entry)` sees every
/// entry, in order, once it is checked against its tile. Returns the right
/// edge, or what is wrong (naming the tile).
pub fn check_tree<S: TileSource>(
    source: &mut S,
    size: u64,
    root: &Hash,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), String>,
) -> Result<Edge, String> {
    let mut edge = Edge::default();
    // The hashes the current level must hold: the roots of the full tiles below.
    let mut expected: Option<Vec<Hash>> = None;
    for level in 0..8u8 {
        let count = tile::level_count(size, level);
        if count == 0 {
            break;
        }
        let mut roots = Vec::new();
        for index in 0..count.div_ceil(WIDTH) {
            let width = (count - index * WIDTH).min(WIDTH) as u16;
            let t = Tile {
                kind: Kind::Hashes(level),
                index,
                width,
            };
            let bytes = source.read(&t)?;
            let hashes = tile::split_hashes(&t, &bytes).ok_or_else(|| {
                format!(
                    "{}: {} bytes, but a tile of {} hashes is {}",
                    t.path(),
                    bytes.len(),
                    t.width,
                    t.byte_len()
                )
            })?;
            if let Some(exp) = &expected {
                let from = (index * WIDTH) as usize;
                if exp.get(from..from + hashes.len()) != Some(hashes.as_slice()) {
                    return Err(format!(
                        "{}: does not match the full tiles of the level below it",
                        t.path()
                    ));
                }
            }
            if level == 0 {
                let b = Tile {
                    kind: Kind::Entries,
                    ..t
                };
                let bytes = source.read(&b)?;
                let entries = tile::split_bundle(&bytes)
                    .ok_or_else(|| format!("{}: not an entry bundle", b.path()))?;
                if entries.len() != hashes.len()
                    || entries.iter().zip(&hashes).any(|(e, h)| &leaf_hash(e) != h)
                {
                    return Err(format!(
                        "{}: its entries do not hash to {}",
                        b.path(),
                        t.path()
                    ));
                }
                for (i, e) in entries.iter().enumerate() {
                    each(index * WIDTH + i as u64, e)?;
                }
                if !t.is_full() {
                    edge.bundle = bytes;
                }
            }
            if t.is_full() {
                roots.push(root_of(&hashes));
            } else if let Some(slot) = edge.hashes.get_mut(usize::from(level)) {
                *slot = hashes;
            }
        }
        expected = Some(roots);
    }
    if &edge.root() != root {
        return Err(format!(
            "the tiles of {size} entries do not hash to the checkpoint's root hash"
        ));
    }
    Ok(edge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Tiles in memory, as a writer would lay them out.
    fn layout(entries: &[Vec<u8>]) -> HashMap<String, Vec<u8>> {
        let mut files = HashMap::new();
        let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
        for t in tile::new_tiles(0, entries.len() as u64) {
            let span = WIDTH.pow(u32::from(t.level())) as usize;
            let mut bytes = Vec::new();
            for i in 0..u64::from(t.width) {
                let lo = (t.index * WIDTH + i) as usize * span;
                match t.kind {
                    Kind::Entries => {
                        tile::push_entry(&mut bytes, &entries[lo]);
                    }
                    Kind::Hashes(_) => bytes.extend_from_slice(&root_of(&leaves[lo..lo + span])),
                }
            }
            files.insert(t.path(), bytes);
        }
        files
    }

    struct Files(HashMap<String, Vec<u8>>);

    impl TileSource for Files {
        fn read(&mut self, t: &Tile) -> Result<Vec<u8>, String> {
            self.0
                .get(&t.path())
                .cloned()
                .ok_or_else(|| format!("{}: missing", t.path()))
        }
    }

    #[test]
    fn a_whole_tree_checks_and_any_change_is_named() {
        let entries: Vec<Vec<u8>> = (0..70_000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let root = root_of(&entries.iter().map(|e| leaf_hash(e)).collect::<Vec<_>>());
        let mut files = Files(layout(&entries));
        let mut seen = 0;
        let edge = check_tree(&mut files, 70_000, &root, |i, e| {
            assert_eq!(e, entries[i as usize].as_slice());
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 70_000);
        assert_eq!(edge.hashes[0].len(), 112);
        assert_eq!(edge.hashes[1].len(), 17);
        assert_eq!(edge.hashes[2].len(), 1);
        let ok = |_: u64, _: &[u8]| Ok(());
        // A changed entry byte, a changed hash in a full tile, a missing tile.
        let mut bad = Files(files.0.clone());
        bad.0.get_mut("tile/entries/005").unwrap()[7] ^= 1;
        let e = check_tree(&mut bad, 70_000, &root, ok).unwrap_err();
        assert!(e.contains("tile/entries/005"), "{e}");
        let mut bad = Files(files.0.clone());
        let t = bad.0.get_mut("tile/0/003").unwrap();
        t[0] ^= 1;
        let e = check_tree(&mut bad, 70_000, &root, ok).unwrap_err();
        assert!(e.contains("tile/entries/003"), "{e}");
        let mut bad = Files(files.0.clone());
        bad.0.remove("tile/1/000");
        assert!(check_tree(&mut bad, 70_000, &root, ok)
            .unwrap_err()
            .contains("tile/1/000"));
        let mut wrong = root;
        wrong[0] ^= 1;
        assert!(check_tree(&mut files, 70_000, &wrong, ok)
            .unwrap_err()
            .contains("root"));
    }
}
