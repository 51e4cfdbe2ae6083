//! Helpers for digest signing (issue 16): what a client sends for gpg,
//! computed here with sha2's `compress256`, independently of the formats
//! crate the server and signtool share.

/// SHA-256 of `data` stopped after its last whole 64-byte block, as a client
/// sends it: (state words hex, length, tail hex).
pub fn sha256_parts(data: &[u8]) -> (String, String, String) {
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let whole = data.len() / 64 * 64;
    let blocks: Vec<_> = data[..whole]
        .chunks_exact(64)
        .map(|b| *sha2::digest::generic_array::GenericArray::from_slice(b))
        .collect();
    sha2::compress256(&mut h, &blocks);
    let words: Vec<u8> = h.iter().flat_map(|w| w.to_be_bytes()).collect();
    (
        hex::encode(words),
        data.len().to_string(),
        hex::encode(&data[whole..]),
    )
}
