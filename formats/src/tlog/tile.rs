//! The C2SP tlog-tiles layout: which tiles a tree of a given size has, their
//! paths (`tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`, `N` written as
//! `x001/x234/067`), the strict parser of those paths, entry bundles
//! (big-endian `u16` length, then the entry), and [`Hashes`]: any Merkle
//! tree hash of a tree, read from its tiles.
//!
//! Tile height 8: a tile holds up to 256 hashes. At level 0 they are leaf
//! hashes; at level `L` each is the hash of a full tile of level `L - 1`,
//! i.e. of the complete subtree of `256^L` leaves.

use crate::tlog::hash::{fold_subtrees, root_of, Hash};

/// Hashes in a full tile.
pub const WIDTH: u64 = 256;
/// Tree levels a tile spans.
pub const HEIGHT: u32 = 8;
/// Longest entry an entry bundle can hold (its length prefix is a `u16`).
pub const MAX_ENTRY: usize = u16::MAX as usize;

/// What a tile holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Merkle tree hashes at this tile level (0 to 7).
    Hashes(u8),
    /// The entries themselves (the bundle beside the level-0 tile).
    Entries,
}

/// One tile: its kind, its index in its level, its width (1 to 256).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    /// Hashes at a level, or entries.
    pub kind: Kind,
    /// Index within the level.
    pub index: u64,
    /// Hashes (or entries) in it; 256 for a full tile.
    pub width: u16,
}

impl Tile {
    /// The tile level (entries are level 0's data).
    pub fn level(&self) -> u8 {
        match self.kind {
            Kind::Hashes(l) => l,
            Kind::Entries => 0,
        }
    }

    /// Whether the tile is full (256 wide).
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == WIDTH
    }

    /// Its path under the log's prefix, as the spec writes it.
    pub fn path(&self) -> String {
        let mut p = match self.kind {
            Kind::Hashes(l) => format!("tile/{l}/"),
            Kind::Entries => "tile/entries/".to_string(),
        };
        p.push_str(&encode_index(self.index));
        if !self.is_full() {
            p.push_str(&format!(".p/{}", self.width));
        }
        p
    }

    /// Parses a tile path (`tile/…`), strictly: only the canonical spelling
    /// of a tile is accepted (no leading zeros, no `.p/256`, no `x000/`
    /// prefix, no other characters), so a path that parses names exactly one
    /// file under the log's directory and nothing else.
    pub fn parse(path: &str) -> Option<Tile> {
        let rest = path.strip_prefix("tile/")?;
        let (kind, rest) = match rest.strip_prefix("entries/") {
            Some(r) => (Kind::Entries, r),
            None => {
                let (l, r) = rest.split_once('/')?;
                let level = parse_decimal(l)?;
                if level >= u64::from(u8::MAX) || level > 7 {
                    return None;
                }
                (Kind::Hashes(level as u8), r)
            }
        };
        let (n, width) = match rest.split_once(".p/") {
            Some((n, w)) => {
                let w = parse_decimal(w)?;
                if !(1..WIDTH).contains(&w) {
                    return None;
                }
                (n, w as u16)
            }
            None => (rest, WIDTH as u16),
        };
        let index = decode_index(n)?;
        let tile = Tile { kind, index, width };
        // Canonical spelling only.
        (tile.path() == path).then_some(tile)
    }

    /// Whether this tile exists for some tree size up to `size`: a full
    /// tile within it, or a partial one no wider than the tree had there.
    pub fn within(&self, size: u64) -> bool {
        let count = level_count(size, self.level());
        let start = self.index.saturating_mul(WIDTH);
        start.saturating_add(u64::from(self.width)) <= count
    }

    /// The tile's bytes hold `width` hashes (for a hash tile).
    pub fn byte_len(&self) -> usize {
        usize::from(self.width) * 32
    }
}

/// Nodes at tile level `level` (tree level `8 * level`) in a tree of `size` leaves.
pub fn level_count(size: u64, level: u8) -> u64 {
    let shift = u32::from(level) * HEIGHT;
    if shift >= 64 {
        0
    } else {
        size >> shift
    }
}

/// `N` as zero-padded 3-digit path elements, all but the last prefixed with `x`.
pub fn encode_index(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

fn decode_index(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split('/').collect();
    let (last, init) = parts.split_last()?;
    let mut n: u64 = 0;
    for p in init {
        let digits = p.strip_prefix('x')?;
        n = n.checked_mul(1000)?.checked_add(three_digits(digits)?)?;
    }
    n.checked_mul(1000)?.checked_add(three_digits(last)?)
}

fn three_digits(s: &str) -> Option<u64> {
    if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A decimal with no sign and no leading zero (but `0` itself).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

/// The tiles (hashes at every level, and entries) of a tree of `size`
/// leaves whose content changed when it grew from `old` leaves: the tiles
/// that became full, and the partial tiles of `size`. A tree writer writes
/// exactly these; every other tile of `size` is as it was at `old`.
pub fn new_tiles(old: u64, size: u64) -> Vec<Tile> {
    let mut out = Vec::new();
    for level in 0..8u8 {
        let (was, now) = (level_count(old, level), level_count(size, level));
        if now == 0 {
            break;
        }
        if now == was {
            continue;
        }
        let push = |out: &mut Vec<Tile>, index: u64, width: u64| {
            out.push(Tile {
                kind: Kind::Hashes(level),
                index,
                width: width as u16,
            });
            if level == 0 {
                out.push(Tile {
                    kind: Kind::Entries,
                    index,
                    width: width as u16,
                });
            }
        };
        for index in was / WIDTH..now / WIDTH {
            push(&mut out, index, WIDTH);
        }
        if now % WIDTH != 0 {
            push(&mut out, now / WIDTH, now % WIDTH);
        }
    }
    out
}

/// The partial tiles (hashes at every level, and entries) of a tree of
/// `size` leaves: its right edge.
pub fn partial_tiles(size: u64) -> Vec<Tile> {
    let mut out = Vec::new();
    for level in 0..8u8 {
        let count = level_count(size, level);
        let width = (count % WIDTH) as u16;
        if width == 0 {
            continue;
        }
        let index = count / WIDTH;
        out.push(Tile {
            kind: Kind::Hashes(level),
            index,
            width,
        });
        if level == 0 {
            out.push(Tile {
                kind: Kind::Entries,
                index,
                width,
            });
        }
    }
    out
}

/// Splits an entry bundle into its entries; `None` when it is not exactly a
/// sequence of length-prefixed entries.
pub fn split_bundle(mut bundle: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !bundle.is_empty() {
        let (len, rest) = bundle.split_at_checked(2)?;
        let n = usize::from(u16::from_be_bytes([*len.first()?, *len.get(1)?]));
        let (entry, rest) = rest.split_at_checked(n)?;
        out.push(entry);
        bundle = rest;
    }
    Some(out)
}

/// Appends `entry` to a bundle; `false` (nothing appended) when it is longer
/// than [`MAX_ENTRY`].
pub fn push_entry(bundle: &mut Vec<u8>, entry: &[u8]) -> bool {
    let Ok(n) = u16::try_from(entry.len()) else {
        return false;
    };
    bundle.extend_from_slice(&n.to_be_bytes());
    bundle.extend_from_slice(entry);
    true
}

/// The partial `tile` cut from the bytes of its full tile (its first
/// `width` hashes, or entries): a log may remove partial tiles once the full
/// one is published, and a client then reads the full one.
pub fn cut_from_full(tile: &Tile, full: &[u8]) -> Option<Vec<u8>> {
    let width = usize::from(tile.width);
    let end = match tile.kind {
        Kind::Hashes(_) => width * 32,
        Kind::Entries => {
            let mut end = 0usize;
            for _ in 0..width {
                let len = full.get(end..end + 2)?;
                end += 2 + usize::from(u16::from_be_bytes([*len.first()?, *len.get(1)?]));
            }
            end
        }
    };
    full.get(..end).map(<[u8]>::to_vec)
}

/// The hashes of a hash tile; `None` unless it is exactly `width` hashes.
pub fn split_hashes(tile: &Tile, bytes: &[u8]) -> Option<Vec<Hash>> {
    if bytes.len() != tile.byte_len() {
        return None;
    }
    bytes
        .chunks_exact(32)
        .map(|c| <Hash>::try_from(c).ok())
        .collect()
}

/// Where [`Hashes`] gets a tile's bytes (a directory, HTTP): the hash
/// tile, full or partial as the tree of the given size has it.
pub trait TileSource {
    /// The bytes of `tile`, or why not.
    fn read(&mut self, tile: &Tile) -> Result<Vec<u8>, String>;
}

/// Merkle tree hashes of a tree of `size` leaves, read from its tiles
/// (cached: each tile is read once).
pub struct Hashes<'a, S: TileSource> {
    size: u64,
    source: &'a mut S,
    cache: std::collections::HashMap<(u8, u64), Vec<Hash>>,
}

impl<'a, S: TileSource> Hashes<'a, S> {
    /// Hashes of the tree of `size` leaves whose tiles `source` has.
    pub fn new(size: u64, source: &'a mut S) -> Self {
        Hashes {
            size,
            source,
            cache: Default::default(),
        }
    }

    /// The tree size.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn tile_hashes(&mut self, level: u8, index: u64) -> Result<&[Hash], String> {
        let count = level_count(self.size, level);
        let start = index.saturating_mul(WIDTH);
        if start >= count {
            return Err(format!("tile {level}/{index} is beyond the tree"));
        }
        let width = (count - start).min(WIDTH) as u16;
        let tile = Tile {
            kind: Kind::Hashes(level),
            index,
            width,
        };
        if !self.cache.contains_key(&(level, index)) {
            let bytes = self.source.read(&tile)?;
            let hashes = split_hashes(&tile, &bytes).ok_or_else(|| {
                format!(
                    "{}: {} bytes, not {} hashes",
                    tile.path(),
                    bytes.len(),
                    width
                )
            })?;
            self.cache.insert((level, index), hashes);
        }
        self.cache
            .get(&(level, index))
            .map(Vec::as_slice)
            .ok_or_else(|| "tile cache".to_string())
    }

    /// The hash of the complete subtree of `2^height` leaves starting at
    /// leaf `index << height`, which must lie within the tree.
    pub fn node(&mut self, height: u32, index: u64) -> Result<Hash, String> {
        let level = (height / HEIGHT) as u8;
        let within = height % HEIGHT;
        // The node covers `2^within` consecutive hashes of tile level `level`.
        let first = index << within;
        let n = 1u64 << within;
        let tile_index = first / WIDTH;
        let hashes = self.tile_hashes(level, tile_index)?;
        let lo = (first % WIDTH) as usize;
        let slice = hashes
            .get(lo..lo + n as usize)
            .ok_or_else(|| format!("node {height}/{index} is beyond the tree"))?;
        Ok(root_of(slice))
    }

    /// The Merkle tree hash of the leaves `lo..hi` (`lo` a multiple of the
    /// largest power of two not above `hi - lo`, as in every RFC 6962 proof).
    pub fn range(&mut self, lo: u64, hi: u64) -> Result<Hash, String> {
        if lo >= hi || hi > self.size {
            return Err(format!("range {lo}..{hi} is not within the tree"));
        }
        let mut subtrees = Vec::new();
        let mut at = lo;
        while at < hi {
            let left = hi - at;
            let mut height = 63 - left.leading_zeros();
            // Largest aligned power of two that fits.
            while height > 0 && !at.is_multiple_of(1u64 << height) {
                height -= 1;
            }
            subtrees.push(self.node(height, at >> height)?);
            at += 1u64 << height;
        }
        Ok(fold_subtrees(&subtrees))
    }

    /// The root hash of the whole tree.
    pub fn root(&mut self) -> Result<Hash, String> {
        if self.size == 0 {
            return Ok(crate::tlog::hash::empty_root());
        }
        self.range(0, self.size)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn index_encoding() {
        for (n, s) in [
            (0, "000"),
            (5, "005"),
            (999, "999"),
            (1000, "x001/000"),
            (1234067, "x001/x234/067"),
        ] {
            assert_eq!(encode_index(n), s);
            assert_eq!(decode_index(s), Some(n));
        }
    }

    #[test]
    fn paths_round_trip_and_only_canonical_ones_parse() {
        let t = Tile {
            kind: Kind::Hashes(1),
            index: 1234067,
            width: 17,
        };
        assert_eq!(t.path(), "tile/1/x001/x234/067.p/17");
        assert_eq!(Tile::parse(&t.path()), Some(t));
        let e = Tile {
            kind: Kind::Entries,
            index: 3,
            width: 256,
        };
        assert_eq!(e.path(), "tile/entries/003");
        assert_eq!(Tile::parse("tile/entries/003"), Some(e));
        for bad in [
            "tile/0/x000/005",
            "tile/01/005",
            "tile/0/5",
            "tile/0/005.p/256",
            "tile/0/005.p/0",
            "tile/0/005.p/07",
            "tile/8/000",
            "tile/0/005/",
            "tile/0/../005",
            "tile/0/x005",
            "tile/0/005x/001",
            "tile/entries/../../etc",
            "tile/0/-01",
            "tile/0/ 05",
            "tile/0/005.p/1/2",
            "tile/data/000",
            "tile//000",
            "tile/0/",
            "checkpoint",
        ] {
            assert_eq!(Tile::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_spec_example_tree_of_70000() {
        // 273 full level-0 tiles, a partial one of 112, one full level-1
        // tile, a partial one of 17, a partial level-2 tile of 1.
        let tiles = new_tiles(0, 70_000);
        let hashes: Vec<_> = tiles
            .iter()
            .filter(|t| matches!(t.kind, Kind::Hashes(_)))
            .collect();
        let full0 = hashes
            .iter()
            .filter(|t| t.level() == 0 && t.is_full())
            .count();
        assert_eq!(full0, 273);
        let partial: Vec<_> = partial_tiles(70_000)
            .into_iter()
            .filter(|t| matches!(t.kind, Kind::Hashes(_)))
            .map(|t| (t.level(), t.index, t.width))
            .collect();
        assert_eq!(partial, vec![(0, 273, 112), (1, 1, 17), (2, 0, 1)]);
        assert!(hashes.iter().any(|t| t.level() == 1 && t.is_full()));
        // A tree of 256: one full level-0 tile and a partial level-1 tile of 1.
        let t256: Vec<_> = new_tiles(0, 256)
            .into_iter()
            .filter(|t| matches!(t.kind, Kind::Hashes(_)))
            .map(|t| (t.level(), t.index, t.width))
            .collect();
        assert_eq!(t256, vec![(0, 0, 256), (1, 0, 1)]);
    }

    #[test]
    fn growing_writes_only_what_changed() {
        let t: Vec<_> = new_tiles(300, 301).into_iter().map(|t| t.path()).collect();
        assert_eq!(t, vec!["tile/0/001.p/45", "tile/entries/001.p/45"]);
        let t: Vec<_> = new_tiles(255, 257).into_iter().map(|t| t.path()).collect();
        assert_eq!(
            t,
            vec![
                "tile/0/000",
                "tile/entries/000",
                "tile/0/001.p/1",
                "tile/entries/001.p/1",
                "tile/1/000.p/1"
            ]
        );
        assert!(new_tiles(7, 7).is_empty());
    }

    #[test]
    fn within_a_tree_size() {
        let p = Tile::parse("tile/0/001.p/44").unwrap();
        assert!(p.within(300) && p.within(256 + 44) && !p.within(299));
        let f = Tile::parse("tile/0/001").unwrap();
        assert!(f.within(512) && !f.within(511));
        let e = Tile::parse("tile/entries/000.p/3").unwrap();
        assert!(e.within(3) && !e.within(2));
        assert!(Tile::parse("tile/1/000.p/1").unwrap().within(256));
        assert!(!Tile::parse("tile/1/000.p/2").unwrap().within(511));
    }

    #[test]
    fn bundles() {
        let mut b = Vec::new();
        assert!(push_entry(&mut b, b"one"));
        assert!(push_entry(&mut b, b""));
        assert!(push_entry(&mut b, &[7u8; 300]));
        assert!(!push_entry(&mut b, &vec![0u8; MAX_ENTRY + 1]));
        let entries = split_bundle(&b).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0], b"one");
        assert_eq!(entries[2].len(), 300);
        assert_eq!(split_bundle(&b[..b.len() - 1]), None);
        let first_two = Tile {
            kind: Kind::Entries,
            index: 0,
            width: 2,
        };
        let cut = cut_from_full(&first_two, &b).unwrap();
        assert_eq!(split_bundle(&cut).unwrap(), vec![&b"one"[..], &b""[..]]);
        let hashes = Tile {
            kind: Kind::Hashes(0),
            index: 0,
            width: 1,
        };
        assert_eq!(cut_from_full(&hashes, &[7u8; 64]).unwrap(), vec![7u8; 32]);
        assert_eq!(cut_from_full(&hashes, &[7u8; 31]), None);
        assert_eq!(split_bundle(&[0]), None);
    }

    /// A tile source over the leaf hashes in memory: builds each tile from
    /// the leaves, as a writer would (also for the proof tests).
    pub(crate) struct Mem(pub(crate) Vec<Hash>);

    impl TileSource for Mem {
        fn read(&mut self, tile: &Tile) -> Result<Vec<u8>, String> {
            let Kind::Hashes(level) = tile.kind else {
                return Err("entries".into());
            };
            let span = WIDTH.pow(u32::from(level)) as usize;
            let mut out = Vec::new();
            for i in 0..u64::from(tile.width) {
                let lo = (tile.index * WIDTH + i) as usize * span;
                out.extend_from_slice(&root_of(&self.0[lo..lo + span]));
            }
            Ok(out)
        }
    }

    #[test]
    fn hashes_from_tiles_match_the_tree() {
        let leaves: Vec<Hash> = (0..70_000u32)
            .map(|i| crate::tlog::leaf_hash(&i.to_be_bytes()))
            .collect();
        let mut src = Mem(leaves.clone());
        for size in [1u64, 2, 255, 256, 257, 511, 513, 65_536, 65_537, 70_000] {
            let mut h = Hashes::new(size, &mut src);
            assert_eq!(
                h.root().unwrap(),
                root_of(&leaves[..size as usize]),
                "{size}"
            );
        }
        let mut h = Hashes::new(70_000, &mut src);
        assert_eq!(h.range(512, 1024).unwrap(), root_of(&leaves[512..1024]));
        assert_eq!(
            h.range(65_536, 70_000).unwrap(),
            root_of(&leaves[65_536..70_000])
        );
        assert!(h.range(0, 70_001).is_err());
    }
}
