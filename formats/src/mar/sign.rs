//! Writing a signed MAR in one pass, and hashing what a MAR signature covers.
//!
//! A MAR signature covers every byte of the file except the signature bytes
//! themselves (the algorithm ids and lengths in front of them are covered).
//! The signature's length is known from the key, so the output's layout is
//! fixed before anything is written: [`write_signed`] writes the header with
//! the new offsets, a placeholder of zeros where the signature goes, then
//! copies the additional sections and content and rewrites the index with
//! shifted offsets, feeding every byte except the placeholder to the hasher
//! as it goes. The caller signs the digest and writes the signature over the
//! placeholder at [`Plan::signature_offset`].
//!
//! Deliberately NOT done: keeping existing signatures (the output carries
//! exactly one, ours; the adapter decides whether replacing is allowed),
//! changing additional sections or entry bytes, any cryptography (the caller
//! owns the hasher and the key).

use std::io::{Read, Seek, SeekFrom, Write};

use super::parse::{Layout, HEADER_LEN, MAX_MAR_SIZE, SIG_BLOCK_HEADER_LEN, SIG_ENTRY_HEADER_LEN};
use crate::SignError;

/// Copy buffer.
const BUF: usize = 64 << 10;

/// Where things go in the signed output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The signature's algorithm id.
    pub algorithm: u32,
    /// The signature's length in bytes.
    pub signature_len: u32,
    /// Where the signature bytes start in the output.
    pub signature_offset: u64,
    /// How far the content and index move (output offset - input offset).
    pub shift: i64,
    /// The output's offset_to_index.
    pub index_offset: u32,
    /// The output's length. Invariant: <= [`MAX_MAR_SIZE`].
    pub total_len: u64,
}

/// Computes the output's layout for one signature of `signature_len` bytes.
pub(crate) fn plan(layout: &Layout, algorithm: u32, signature_len: u32) -> Result<Plan, SignError> {
    let signature_offset = HEADER_LEN + SIG_BLOCK_HEADER_LEN + SIG_ENTRY_HEADER_LEN;
    let additional_len = layout.additional.as_ref().map_or(0, |r| r.end - r.start);
    let content_start = signature_offset + u64::from(signature_len) + additional_len;
    // All these are below MAX_MAR_SIZE (500 MiB), so i64 arithmetic is exact.
    let shift = content_start as i64 - layout.content.start as i64;
    let total_len = layout.file_len as i64 + shift;
    let index_offset = layout.content.end as i64 + shift;
    if total_len < 0 || total_len as u64 > MAX_MAR_SIZE {
        return Err(SignError::Rejected(format!(
            "the signed MAR would be {total_len} bytes, over the limit of {MAX_MAR_SIZE} bytes (500 MiB)"
        )));
    }
    let index_offset = u32::try_from(index_offset).map_err(|_| {
        SignError::Rejected("the signed MAR's index offset would not fit in 32 bits".into())
    })?;
    for e in &layout.entries {
        if u32::try_from(i64::from(e.offset) + shift).is_err() {
            return Err(SignError::Rejected(
                "an entry offset would not fit in 32 bits".into(),
            ));
        }
    }
    Ok(Plan {
        algorithm,
        signature_len,
        signature_offset,
        shift,
        index_offset,
        total_len: total_len as u64,
    })
}

/// Writes `bytes` to `out` and feeds them to `hash`.
fn emit<W: Write>(
    out: &mut W,
    hash: &mut dyn FnMut(&[u8]) -> Result<(), SignError>,
    bytes: &[u8],
) -> Result<(), SignError> {
    hash(bytes)?;
    out.write_all(bytes)?;
    Ok(())
}

/// Copies `len` bytes of `input` from `from` to `out`, hashing them.
fn copy_range<R: Read + Seek, W: Write>(
    input: &mut R,
    from: u64,
    len: u64,
    out: &mut W,
    hash: &mut dyn FnMut(&[u8]) -> Result<(), SignError>,
    buf: &mut [u8],
) -> Result<(), SignError> {
    input.seek(SeekFrom::Start(from))?;
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let chunk = buf
            .get_mut(..want)
            .ok_or_else(|| SignError::Internal(anyhow::anyhow!("copy buffer")))?;
        input.read_exact(chunk).map_err(|e| match e.kind() {
            // The file shrank under us, or the layout was wrong: never sign that.
            std::io::ErrorKind::UnexpectedEof => {
                SignError::Rejected("malformed MAR: truncated content".into())
            }
            _ => SignError::from(e),
        })?;
        emit(out, hash, chunk)?;
        left -= want as u64;
    }
    Ok(())
}

/// Writes the signed MAR for `layout`/`plan` to `out`, with zeros where the
/// signature goes, feeding every byte but those zeros to `hash` in order.
pub(crate) fn write_signed<R: Read + Seek, W: Write>(
    input: &mut R,
    layout: &Layout,
    plan: &Plan,
    out: &mut W,
    hash: &mut dyn FnMut(&[u8]) -> Result<(), SignError>,
) -> Result<(), SignError> {
    let mut head = Vec::with_capacity(28);
    head.extend_from_slice(b"MAR1");
    head.extend_from_slice(&plan.index_offset.to_be_bytes());
    head.extend_from_slice(&plan.total_len.to_be_bytes());
    head.extend_from_slice(&1u32.to_be_bytes());
    head.extend_from_slice(&plan.algorithm.to_be_bytes());
    head.extend_from_slice(&plan.signature_len.to_be_bytes());
    emit(out, hash, &head)?;
    // The placeholder: not covered by the signature.
    out.write_all(&vec![0u8; plan.signature_len as usize])?;

    let mut buf = vec![0u8; BUF];
    if let Some(add) = &layout.additional {
        copy_range(input, add.start, add.end - add.start, out, hash, &mut buf)?;
    }
    let content = &layout.content;
    copy_range(
        input,
        content.start,
        content.end - content.start,
        out,
        hash,
        &mut buf,
    )?;

    // The index, entry by entry, in its original order, offsets shifted.
    emit(out, hash, &layout.index_len.to_be_bytes())?;
    let mut entry = Vec::new();
    for e in &layout.entries {
        let offset = u32::try_from(i64::from(e.offset) + plan.shift)
            .map_err(|_| SignError::Rejected("an entry offset would not fit in 32 bits".into()))?;
        entry.clear();
        entry.extend_from_slice(&offset.to_be_bytes());
        entry.extend_from_slice(&e.len.to_be_bytes());
        entry.extend_from_slice(&e.flags.to_be_bytes());
        entry.extend_from_slice(&e.name);
        entry.push(0);
        emit(out, hash, &entry)?;
    }
    Ok(())
}

/// Feeds what the signatures of a signed MAR cover to `hash`: the whole
/// file except each signature's bytes.
/// The file behind `out`, flushed, once it holds exactly the bytes `plan`
/// planned (the signer and digest signing's `prepare` both check this).
pub(crate) fn written_file(
    out: std::io::BufWriter<std::fs::File>,
    plan: &Plan,
) -> Result<std::fs::File, SignError> {
    let mut file = out
        .into_inner()
        .map_err(|e| SignError::from(e.into_error()))?;
    let written = file.stream_position()?;
    if written != plan.total_len {
        return Err(SignError::Internal(anyhow::anyhow!(
            "wrote {written} bytes, planned {}",
            plan.total_len
        )));
    }
    Ok(file)
}

pub(crate) fn hash_signed_data<R: Read + Seek>(
    input: &mut R,
    layout: &Layout,
    hash: &mut dyn FnMut(&[u8]) -> Result<(), SignError>,
) -> Result<(), SignError> {
    let mut sink = std::io::sink();
    let mut buf = vec![0u8; BUF];
    let mut pos = 0u64;
    let sigs = layout
        .signature_block
        .as_ref()
        .map(|b| b.signatures.as_slice())
        .unwrap_or(&[]);
    for s in sigs {
        copy_range(input, pos, s.offset - pos, &mut sink, hash, &mut buf)?;
        pos = s.offset + u64::from(s.len);
    }
    copy_range(input, pos, layout.file_len - pos, &mut sink, hash, &mut buf)
}
