//! The settlement key: a secp256k1 key in the data dir whose EVM address is
//! where this peer's credits are paid. Every contribution names the address
//! (so the swarm key binds it to the peer id) and carries this key's
//! signature of the last ledger root the peer computed: the settlement
//! contract counts those signatures for its quorum.

use crate::error::Error;
use k256::ecdsa::SigningKey;
use protocol::message::{Address, EthSignature};
use std::path::Path;

/// A loaded settlement key.
#[derive(Clone)]
pub struct SettlementKey {
    key: SigningKey,
    address: Address,
}

impl std::fmt::Debug for SettlementKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SettlementKey(0x{})", hex::encode(self.address))
    }
}

impl SettlementKey {
    /// Loads the key at `path` (64 hex characters, as `cast wallet` and
    /// most EVM tools write a private key, with or without `0x`), or creates
    /// it (mode 0600) on first run.
    pub fn load_or_create(path: &Path) -> Result<SettlementKey, Error> {
        let io = |source| Error::Io { path: path.display().to_string(), source };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let t = text.trim();
                let bytes = hex::decode(t.strip_prefix("0x").unwrap_or(t))
                    .map_err(|_| Error::BadKey(path.display().to_string()))?;
                SettlementKey::from_secret(&bytes).ok_or_else(|| Error::BadKey(path.display().to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                // 32 bytes from the OS's generator (through libp2p's key generation).
                let key = loop {
                    let kp = libp2p::identity::Keypair::generate_ed25519().try_into_ed25519().expect("ed25519");
                    if let Some(k) = SettlementKey::from_secret(kp.secret().as_ref()) {
                        break k;
                    }
                };
                let tmp = path.with_extension("tmp");
                crate::identity::write_private(&tmp, hex::encode(key.key.to_bytes()).as_bytes()).map_err(io)?;
                std::fs::rename(&tmp, path).map_err(io)?;
                Ok(key)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A key from its 32-byte secret.
    pub fn from_secret(secret: &[u8]) -> Option<SettlementKey> {
        let key = SigningKey::from_slice(secret).ok()?;
        let point = key.verifying_key().to_encoded_point(false);
        let hash = protocol::ledger::keccak(&[&point.as_bytes()[1..]]);
        let mut address = [0; 20];
        address.copy_from_slice(&hash[12..]);
        Some(SettlementKey { key, address })
    }

    /// The EVM address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The secret, for tools that send transactions with this key.
    pub fn secret_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    /// Signs a 32-byte digest as `ecrecover` checks it (r, s, v = 27/28).
    pub fn sign(&self, digest: &[u8; 32]) -> EthSignature {
        let (sig, recid) = self.key.sign_prehash_recoverable(digest).expect("a 32-byte digest signs");
        // k256 gives a low-s signature; the recovery id matches it.
        let mut out = [0; 65];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = 27 + recid.to_byte();
        EthSignature(out)
    }
}

/// Recovers the address that signed `digest` (to check attestations before
/// posting them).
pub fn recover(digest: &[u8; 32], sig: &EthSignature) -> Option<Address> {
    use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
    let s = Signature::from_slice(&sig.0[..64]).ok()?;
    let id = RecoveryId::from_byte(sig.0[64].checked_sub(27)?)?;
    let key = VerifyingKey::recover_from_prehash(digest, &s, id).ok()?;
    let point = key.to_encoded_point(false);
    let hash = protocol::ledger::keccak(&[&point.as_bytes()[1..]]);
    let mut a = [0; 20];
    a.copy_from_slice(&hash[12..]);
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_key_has_its_known_address_and_signatures_recover_to_it() {
        // anvil's first account.
        let k = SettlementKey::from_secret(
            &hex::decode("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80").unwrap(),
        )
        .unwrap();
        assert_eq!(hex::encode(k.address()), "f39fd6e51aad88f6f4ce6ab8827279cfffb92266");
        let digest = protocol::ledger::keccak(&[b"x"]);
        let sig = k.sign(&digest);
        assert_eq!(recover(&digest, &sig), Some(k.address()));
        let other = protocol::ledger::keccak(&[b"y"]);
        assert_ne!(recover(&other, &sig), Some(k.address()));
    }

    #[test]
    fn the_key_file_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settlement.key");
        let a = SettlementKey::load_or_create(&path).unwrap();
        let b = SettlementKey::load_or_create(&path).unwrap();
        assert_eq!(a.address(), b.address());
        std::fs::write(&path, "not hex").unwrap();
        assert!(SettlementKey::load_or_create(&path).is_err());
    }
}
