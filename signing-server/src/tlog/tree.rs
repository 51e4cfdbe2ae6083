//! The log's tree in memory: its right edge only (the partial tile of each
//! level and the partial entry bundle), which is all that appending and the
//! root hash need. Pure: the writer decides what to do with the tiles
//! [`Tree::append`] returns.

use formats::tlog::hash::{root_of, Hash};
use formats::tlog::leaf_hash;
use formats::tlog::tile::{self, Kind, Tile, WIDTH};
use formats::tlog::verify::Edge;

/// The right edge of a tree.
///
/// Invariant: `edge[L]` holds the hashes of the partial tile at level `L`
/// (fewer than 256), `bundle` the length-prefixed entries of the partial
/// entry bundle (as many as `edge[0]`), and `size` is the leaves they stand for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tree {
    size: u64,
    edge: [Vec<Hash>; 8],
    bundle: Vec<u8>,
}

impl Tree {
    /// The tree of `size` leaves ending in `edge` (read back from disk and
    /// checked by `formats::tlog::verify::check_tree`).
    pub(crate) fn from_edge(size: u64, edge: Edge) -> Tree {
        Tree {
            size,
            edge: edge.hashes,
            bundle: edge.bundle,
        }
    }

    /// Leaves in the tree.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The RFC 6962 root hash.
    pub(crate) fn root(&self) -> Hash {
        Edge {
            hashes: self.edge.clone(),
            bundle: Vec::new(),
        }
        .root()
    }

    /// Appends `entries` (each at most [`tile::MAX_ENTRY`] bytes: the caller
    /// checks); returns the tiles whose content is new, with their bytes:
    /// every tile that became full, and the partial tiles that grew.
    pub(crate) fn append(&mut self, entries: &[Vec<u8>]) -> Vec<(Tile, Vec<u8>)> {
        let old = self.size;
        let mut out = Vec::new();
        for entry in entries {
            let index = self.size / WIDTH;
            self.edge[0].push(leaf_hash(entry));
            tile::push_entry(&mut self.bundle, entry);
            self.size += 1;
            if self.edge[0].len() as u64 == WIDTH {
                out.push((
                    Tile {
                        kind: Kind::Entries,
                        index,
                        width: WIDTH as u16,
                    },
                    std::mem::take(&mut self.bundle),
                ));
                self.carry(0, index, &mut out);
            }
        }
        for t in tile::new_tiles(old, self.size) {
            if t.is_full() {
                continue;
            }
            let bytes = match t.kind {
                Kind::Entries => self.bundle.clone(),
                Kind::Hashes(l) => self.edge[usize::from(l)].concat(),
            };
            out.push((t, bytes));
        }
        out
    }

    /// The tile at `level` is full: it is written, and its root goes up.
    fn carry(&mut self, level: usize, index: u64, out: &mut Vec<(Tile, Vec<u8>)>) {
        let hashes = std::mem::take(&mut self.edge[level]);
        let up = root_of(&hashes);
        out.push((
            Tile {
                kind: Kind::Hashes(level as u8),
                index,
                width: WIDTH as u16,
            },
            hashes.concat(),
        ));
        if let Some(next) = self.edge.get_mut(level + 1) {
            next.push(up);
            if next.len() as u64 == WIDTH {
                self.carry(level + 1, index / WIDTH, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
        range.map(|i| format!("entry {i}").into_bytes()).collect()
    }

    #[test]
    fn root_matches_the_whole_tree_at_every_size() {
        let all = entries(0..70_000);
        let leaves: Vec<Hash> = all.iter().map(|e| leaf_hash(e)).collect();
        let mut t = Tree::default();
        assert_eq!(t.root(), root_of(&[]));
        let mut at = 0usize;
        for step in [1usize, 1, 3, 250, 1, 256, 300, 1000, 65_536 - 1812, 1, 4000] {
            t.append(&all[at..at + step]);
            at += step;
            assert_eq!(t.size(), at as u64);
            assert_eq!(t.root(), root_of(&leaves[..at]), "size {at}");
        }
    }

    #[test]
    fn appends_write_exactly_the_new_tiles() {
        let all = entries(0..1000);
        let mut t = Tree::default();
        let mut at = 0usize;
        for step in [5usize, 251, 1, 300, 443] {
            let old = at as u64;
            let written = t.append(&all[at..at + step]);
            at += step;
            let mut got: Vec<Tile> = written.iter().map(|(t, _)| *t).collect();
            let mut want = tile::new_tiles(old, at as u64);
            got.sort();
            want.sort();
            assert_eq!(got, want, "{old} → {at}");
            for (tile, bytes) in &written {
                match tile.kind {
                    Kind::Entries => {
                        let e = tile::split_bundle(bytes).unwrap();
                        assert_eq!(e.len(), usize::from(tile.width));
                        let first = tile.index as usize * 256;
                        assert_eq!(e[0], all[first].as_slice());
                    }
                    Kind::Hashes(_) => assert_eq!(bytes.len(), tile.byte_len()),
                }
            }
        }
        // 1000 = 3 full tiles + 232: the level-1 partial tile holds 3 hashes.
        assert_eq!(t.edge[1].len(), 3);
        assert_eq!(t.edge[0].len(), 232);
    }
}
