//! The ZIP layer of the APK signer: [`read`] finds and validates the
//! structure of an input, [`data`] streams an entry's bytes (inflating them
//! to check and hash the content), [`write`] is the raw-copy writer.
//!
//! The central directory is authoritative, as it is for Android and
//! apksigner: entries are located through it only (which is also how an
//! old APK Signing Block or anything else between entries is dropped), and
//! its compression method wins over a local header's.
//!
//! Deliberately NOT done: no ZIP64 (Android's APK signature verifier and
//! apksigner do not read it either), no encryption, no recompression.

mod data;
mod read;
mod write;

pub(crate) use data::{copy_entry, small_content};
pub(crate) use read::{find_eocd, read_archive, read_cd};
pub(crate) use write::{
    eocd_record, new_stored_entry, push_cd_record, write_local_header, write_simple, Counted,
    EOCD_CD_OFFSET_FIELD,
};

use crate::SignError;

/// Largest central directory we read into memory.
pub(crate) const MAX_CD_SIZE: u64 = 32 << 20;
/// Longest entry name we accept.
pub(crate) const MAX_NAME: usize = 4096;
/// Deflate cannot expand more than about 1032:1; anything above is corrupt
/// or a bomb.
pub(crate) const MAX_RATIO: u64 = 1100;
/// Entries up to this size may claim any ratio (tiny files of zeros).
pub(crate) const RATIO_FREE: u64 = 1 << 20;

pub(crate) const LOCAL_SIG: u32 = 0x0403_4b50;
pub(crate) const CENTRAL_SIG: u32 = 0x0201_4b50;
pub(crate) const EOCD_SIG: u32 = 0x0605_4b50;
pub(crate) const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
pub(crate) const DESCRIPTOR_SIG: u32 = 0x0807_4b50;
/// Android's alignment extra field (what apksigner and zipalign -p use).
pub(crate) const ALIGN_EXTRA_ID: u16 = 0xd935;

/// General purpose flag: data descriptor follows the data.
pub(crate) const FLAG_DESCRIPTOR: u16 = 0x0008;
/// General purpose flags: traditional or strong encryption, masked headers.
pub(crate) const FLAG_ENCRYPTED: u16 = 0x0001 | 0x0040 | 0x2000;

pub(crate) fn reject(msg: impl Into<String>) -> SignError {
    SignError::Rejected(msg.into())
}

/// A bounds-checked little-endian reader over a byte slice.
pub(crate) struct Bytes<'a> {
    buf: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Bytes { buf }
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2)?.try_into().ok().map(u16::from_le_bytes)
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }
}

/// One entry, as the central directory describes it (checked against its
/// local header).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) version_made_by: u16,
    pub(crate) version_needed: u16,
    /// Invariant: no encryption bits unless `dropped`; the descriptor bit is
    /// cleared on output.
    pub(crate) flags: u16,
    /// Invariant: 0 (stored) or 8 (deflate) unless `dropped`.
    pub(crate) method: u16,
    pub(crate) time: u16,
    pub(crate) date: u16,
    pub(crate) crc: u32,
    pub(crate) csize: u32,
    pub(crate) usize: u32,
    pub(crate) internal_attr: u16,
    pub(crate) external_attr: u32,
    pub(crate) cd_extra: Vec<u8>,
    pub(crate) comment: Vec<u8>,
    /// The local header's extra field (copied, minus old alignment padding).
    pub(crate) local_extra: Vec<u8>,
    /// Where the compressed data starts in the input.
    pub(crate) data_offset: u64,
    /// An entry signing removes (an old signature file): checked only for
    /// what locating the others needs; its data is never read.
    pub(crate) dropped: bool,
}

/// The EOCD of a file: where the central directory is.
#[derive(Debug, Clone)]
pub(crate) struct Eocd {
    /// Offset of the EOCD record itself.
    pub(crate) offset: u64,
    pub(crate) cd_offset: u64,
    pub(crate) cd_size: u64,
    pub(crate) entries: u16,
    pub(crate) comment: Vec<u8>,
}

/// A validated input archive: its entries in file order.
#[derive(Debug)]
pub(crate) struct Archive {
    pub(crate) entries: Vec<Entry>,
    pub(crate) comment: Vec<u8>,
}
