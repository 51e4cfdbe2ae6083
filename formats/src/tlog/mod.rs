//! The transparency log's formats (issue 27), shared by the server that
//! writes the log and the clients that check it: RFC 6962 hashing and proofs
//! ([`hash`], [`proof`]), the C2SP tlog-tiles layout ([`tile`]), the
//! tlog-checkpoint body ([`checkpoint`]) and C2SP signed notes with Ed25519
//! ([`note`]).
//!
//! Written to the public specs (c2sp.org/tlog-tiles, c2sp.org/tlog-checkpoint,
//! c2sp.org/signed-note, RFC 6962 / RFC 9162) and tested against their
//! published vectors; the end-to-end tests check our logs with Go's own
//! `golang.org/x/mod/sumdb/{note,tlog}`.
//!
//! Deliberately NOT here: files, durability, HTTP (the server's
//! `tlog` module writes; signtool fetches). Everything here is pure and
//! bounded by its input.

pub mod checkpoint;
pub mod hash;
pub mod note;
pub mod proof;
pub mod tile;
pub mod verify;

pub use checkpoint::Checkpoint;
pub use hash::{leaf_hash, node_hash, Hash};
pub use note::{NoteKey, NoteVerifier};
