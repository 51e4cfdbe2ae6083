//! Compile-time facts about the types that hold unlocked key material or
//! passphrases: each one wipes its memory when dropped (`ZeroizeOnDrop`).
//! If a crate upgrade drops that guarantee, this stops compiling.
//!
//! What cannot be stated this way (OpenSSL's `PKey`, which clears private
//! numbers in C on free; apple-codesign's `InMemoryPrivateKey`, whose fields
//! wipe themselves but which does not say so as a type) is written down in
//! docs/SECURITY.md, "What is wiped from memory".

fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop>() {}

#[test]
fn gpg_key_material_is_zeroized_on_drop() {
    // The unlocked secret parameters of any rpgp key, and the RSA and
    // Ed25519 secret keys inside them.
    zeroized_on_drop::<pgp::types::PlainSecretParams>();
    zeroized_on_drop::<pgp::crypto::rsa::SecretKey>();
    zeroized_on_drop::<pgp::crypto::ed25519::SecretKey>();
}

#[test]
fn passphrases_and_decrypted_key_files_are_zeroized_on_drop() {
    // Passphrases (secrecy), and the buffers the signers read key files
    // and decrypted PEM/DER into (mar, apk, authenticode, apple).
    zeroized_on_drop::<secrecy::SecretString>();
    zeroized_on_drop::<zeroize::Zeroizing<Vec<u8>>>();
}

#[test]
fn apple_key_storage_is_zeroized_on_drop() {
    // apple-codesign 0.29's InMemoryRsaKey keeps the key as a
    // der::SecretDocument; its Ed25519 key is a Zeroizing<Vec<u8>>.
    zeroized_on_drop::<der::SecretDocument>();
}
