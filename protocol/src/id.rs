//! Peer identities (ed25519 keys) and content hashes (BLAKE3).

use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A BLAKE3 hash: content address of blobs, id of runs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// BLAKE3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 bytes in hex, for log lines.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Hash> {
        let v = hex::decode(s).ok()?;
        Some(Hash(v.try_into().ok()?))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.short())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A peer: the 32 bytes of its ed25519 public key (the same key is its
/// libp2p identity).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub [u8; 32]);

impl PeerId {
    /// The first 4 bytes in hex (8 characters), for log lines.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Verifies an ed25519 signature made by this peer over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        key.verify(msg, &sig).is_ok()
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Peer({})", self.short())
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// An ed25519 signing key.
#[derive(Clone)]
pub struct Keypair(ed25519_dalek::SigningKey);

impl Keypair {
    /// A key from 32 secret bytes (a key file's content).
    pub fn from_secret(secret: [u8; 32]) -> Keypair {
        Keypair(ed25519_dalek::SigningKey::from_bytes(&secret))
    }

    /// A deterministic key for tests and the simulator.
    pub fn from_seed(seed: u64) -> Keypair {
        let h = blake3::hash(&seed.to_le_bytes());
        Keypair::from_secret(*h.as_bytes())
    }

    /// The 32 secret bytes.
    pub fn secret(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// This key's peer id.
    pub fn peer_id(&self) -> PeerId {
        PeerId(self.0.verifying_key().to_bytes())
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({:?})", self.peer_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let k = Keypair::from_seed(1);
        let sig = k.sign(b"hello");
        assert!(k.peer_id().verify(b"hello", &sig));
        assert!(!k.peer_id().verify(b"hellp", &sig));
        assert!(!Keypair::from_seed(2).peer_id().verify(b"hello", &sig));
    }

    #[test]
    fn hex_round_trip() {
        let h = Hash::of(b"x");
        assert_eq!(Hash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(Hash::from_hex("zz"), None);
    }
}
