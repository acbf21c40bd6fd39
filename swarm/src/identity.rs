//! The persistent peer identity: one ed25519 key, stored in the data dir,
//! used for libp2p, for signing envelopes, and as the protocol's peer id.

use crate::error::Error;
use libp2p::identity;
use std::path::Path;

/// Loads the key at `path`, or creates it (mode 0600) on first run.
pub fn load_or_create(path: &Path) -> Result<protocol::Keypair, Error> {
    let io = |source| Error::Io { path: path.display().to_string(), source };
    match std::fs::read(path) {
        Ok(bytes) => {
            let secret: [u8; 32] = bytes.try_into().map_err(|_| Error::BadKey(path.display().to_string()))?;
            Ok(protocol::Keypair::from_secret(secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let kp = identity::Keypair::generate_ed25519();
            let secret = secret_of(&kp).ok_or_else(|| Error::BadKey(path.display().to_string()))?;
            let tmp = path.with_extension("tmp");
            write_private(&tmp, &secret).map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)?;
            Ok(protocol::Keypair::from_secret(secret))
        }
        Err(e) => Err(io(e)),
    }
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn secret_of(kp: &identity::Keypair) -> Option<[u8; 32]> {
    let ed = kp.clone().try_into_ed25519().ok()?;
    ed.secret().as_ref().try_into().ok()
}

/// The libp2p keypair of a protocol key (the same ed25519 secret).
pub fn to_libp2p(key: &protocol::Keypair) -> identity::Keypair {
    identity::Keypair::ed25519_from_bytes(key.secret()).expect("32 bytes are a valid ed25519 secret")
}

/// The libp2p peer id of a protocol peer id.
pub fn libp2p_peer(p: &protocol::PeerId) -> Option<libp2p::PeerId> {
    let pk = identity::ed25519::PublicKey::try_from_bytes(&p.0).ok()?;
    Some(identity::PublicKey::from(pk).to_peer_id())
}

/// The protocol peer id of a libp2p peer id (ed25519 keys only).
pub fn protocol_peer(p: &libp2p::PeerId) -> Option<protocol::PeerId> {
    let mh: &libp2p::multihash::Multihash<64> = p.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let pk = identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    Some(protocol::PeerId(pk.try_into_ed25519().ok()?.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_persistent_and_ids_convert() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "the key file is private: {mode:o}");
        }
        let lp = to_libp2p(&a).public().to_peer_id();
        assert_eq!(libp2p_peer(&a.peer_id()), Some(lp));
        assert_eq!(protocol_peer(&lp), Some(a.peer_id()));
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(load_or_create(&path), Err(Error::BadKey(_))));
    }
}
