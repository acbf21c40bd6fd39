//! The signed envelope around every control message.
//!
//! Wire layout (all integers little-endian):
//!
//! ```text
//! version u8 | run id [32] | round u64 | sender [32] | payload (bincode) | signature [64]
//! ```
//!
//! The signature covers every byte before it. A receiver checks, in order:
//! the total size ([`MAX_ENVELOPE_BYTES`]) before anything else, the
//! signature, the run id, the round (the state machine decides), and only then
//! decodes the payload, itself with a size limit.

use crate::id::{Hash, Keypair, PeerId};
use crate::message::{Message, Signature};

/// Hard bound on one control message, checked before any decoding.
/// 120 KiB: a manifest of 256 entries (each about 370 bytes with its payee
/// and attestation) plus credited checks fits, under gossipsub's 128 KiB.
pub const MAX_ENVELOPE_BYTES: usize = 120 * 1024;
/// The wire format version this build speaks (2: `Leave` carries a
/// counter, `Manifest` the peers excluded before it; 3: contributions carry
/// a payee and a ledger attestation, manifests credited checks and a root).
pub const VERSION: u8 = 3;
// Field offsets, in wire order.
const RUN: usize = 1;
const ROUND: usize = RUN + 32;
const SENDER: usize = ROUND + 8;
/// Bytes before the payload.
pub const HEADER: usize = SENDER + 32;
const SIG: usize = 64;

/// Why an incoming message was dropped. Each is counted by the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Larger than [`MAX_ENVELOPE_BYTES`].
    Oversize,
    /// Too short, unknown version, or an undecodable payload.
    Malformed,
    /// The signature does not verify against the sender's key.
    BadSignature,
    /// Another run's id.
    WrongRun,
    /// A round this peer has already closed (or one absurdly far ahead).
    StaleRound,
    /// Well-formed but inconsistent content (e.g. a manifest signed by someone
    /// other than its aggregator, duplicated entries).
    Invalid,
    /// Signed by another key than the one of the peer that published it
    /// (one connection cannot speak for other identities).
    SignerMismatch,
    /// A manifest signed by a peer that may not sign it: not a contributor
    /// of the previous round's manifest.
    NotCandidate,
    /// From a peer excluded from the run.
    Excluded,
    /// About a round after the run's last one.
    BeyondRun,
    /// A hello or leave not newer than one already seen from its sender
    /// (replayed).
    Replayed,
    /// A hello from a peer without standing that this peer does not know,
    /// while it knows as many such peers as it keeps.
    Crowded,
}

/// An envelope whose size and signature have been checked; its payload is not
/// decoded yet.
#[derive(Clone, Debug)]
pub struct Opened<'a> {
    /// The run the sender says this belongs to.
    pub run: Hash,
    /// The round the sender says this belongs to.
    pub round: u64,
    /// The signer.
    pub sender: PeerId,
    /// The signature (verified).
    pub signature: Signature,
    payload: &'a [u8],
}

impl Opened<'_> {
    /// Decodes the payload, bounded by the envelope's own size.
    pub fn message(&self) -> Result<Message, DropReason> {
        let cfg = bincode::config::standard().with_limit::<MAX_ENVELOPE_BYTES>();
        match bincode::serde::decode_from_slice::<Message, _>(self.payload, cfg) {
            Ok((m, used)) if used == self.payload.len() => Ok(m),
            _ => Err(DropReason::Malformed),
        }
    }
}

/// A decoded, verified envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// Run id.
    pub run: Hash,
    /// Round number.
    pub round: u64,
    /// Signer.
    pub sender: PeerId,
    /// Content.
    pub message: Message,
}

impl Envelope {
    /// The signed part of an envelope: everything but the signature.
    fn body(run: Hash, round: u64, sender: PeerId, message: &Message) -> Result<Vec<u8>, DropReason> {
        let cfg = bincode::config::standard();
        let payload = bincode::serde::encode_to_vec(message, cfg).map_err(|_| DropReason::Malformed)?;
        let mut out = Vec::with_capacity(HEADER + payload.len() + SIG);
        out.push(VERSION);
        out.extend_from_slice(&run.0);
        out.extend_from_slice(&round.to_le_bytes());
        out.extend_from_slice(&sender.0);
        out.extend_from_slice(&payload);
        Ok(out)
    }

    /// Whether `signature` is `sender`'s signature of the envelope that
    /// carries `message` for `run` and `round` (a signed message quoted in
    /// another, e.g. an announcement in a manifest entry).
    pub fn verify_detached(run: Hash, round: u64, sender: PeerId, message: &Message, signature: &Signature) -> bool {
        Envelope::body(run, round, sender, message).is_ok_and(|b| sender.verify(&b, &signature.0))
    }

    /// Encodes and signs. Fails only if the result would exceed the bound.
    pub fn seal(key: &Keypair, run: Hash, round: u64, message: &Message) -> Result<Vec<u8>, DropReason> {
        let mut out = Envelope::body(run, round, key.peer_id(), message)?;
        let sig = key.sign(&out);
        out.extend_from_slice(&sig);
        if out.len() > MAX_ENVELOPE_BYTES {
            return Err(DropReason::Oversize);
        }
        Ok(out)
    }

    /// Checks size, layout and signature; leaves the payload undecoded.
    pub fn open(bytes: &[u8]) -> Result<Opened<'_>, DropReason> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(DropReason::Oversize);
        }
        if bytes.len() < HEADER + SIG || bytes[0] != VERSION {
            return Err(DropReason::Malformed);
        }
        let (body, sig) = bytes.split_at(bytes.len() - SIG);
        let sig: [u8; 64] = sig.try_into().map_err(|_| DropReason::Malformed)?;
        let field = |at: usize, len: usize| &body[at..at + len];
        let sender = PeerId(field(SENDER, 32).try_into().map_err(|_| DropReason::Malformed)?);
        if !sender.verify(body, &sig) {
            return Err(DropReason::BadSignature);
        }
        let run = Hash(field(RUN, 32).try_into().map_err(|_| DropReason::Malformed)?);
        let round = u64::from_le_bytes(field(ROUND, 8).try_into().map_err(|_| DropReason::Malformed)?);
        Ok(Opened { run, round, sender, signature: Signature(sig), payload: &body[HEADER..] })
    }

    /// Whether envelope bytes carry a hello, without decoding them.
    pub fn is_hello(bytes: &[u8]) -> bool {
        bytes.get(HEADER) == Some(&Message::HELLO_TAG)
    }

    /// Opens, checks the run id, and decodes (for callers with no round rule).
    pub fn decode(bytes: &[u8], run: Hash) -> Result<Envelope, DropReason> {
        let o = Envelope::open(bytes)?;
        if o.run != run {
            return Err(DropReason::WrongRun);
        }
        let message = o.message()?;
        Ok(Envelope { run: o.run, round: o.round, sender: o.sender, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Status;

    fn hello() -> Message {
        Message::Hello { status: Status::Active, seq: 7, recent: vec![] }
    }

    #[test]
    fn round_trip() {
        let k = Keypair::from_seed(3);
        let run = Hash::of(b"run");
        let bytes = Envelope::seal(&k, run, 9, &hello()).unwrap();
        let e = Envelope::decode(&bytes, run).unwrap();
        assert_eq!(e.round, 9);
        assert_eq!(e.sender, k.peer_id());
        assert_eq!(e.message, hello());
    }

    #[test]
    fn rejects_tampering_wrong_run_and_oversize() {
        let k = Keypair::from_seed(3);
        let run = Hash::of(b"run");
        let mut bytes = Envelope::seal(&k, run, 9, &hello()).unwrap();
        assert_eq!(Envelope::decode(&bytes, Hash::of(b"other")), Err(DropReason::WrongRun));
        assert!(Envelope::is_hello(&bytes));
        bytes[ROUND + 2] ^= 1; // the round
        assert_eq!(Envelope::decode(&bytes, run).unwrap_err(), DropReason::BadSignature);
        let big = vec![1u8; MAX_ENVELOPE_BYTES + 1];
        assert_eq!(Envelope::open(&big).unwrap_err(), DropReason::Oversize);
        assert_eq!(Envelope::open(&[1, 2, 3]).unwrap_err(), DropReason::Malformed);
    }

    #[test]
    fn signed_garbage_payload_is_malformed() {
        let k = Keypair::from_seed(4);
        let run = Hash::of(b"run");
        let mut body = vec![VERSION];
        body.extend_from_slice(&run.0);
        body.extend_from_slice(&1u64.to_le_bytes());
        body.extend_from_slice(&k.peer_id().0);
        body.extend_from_slice(&[0xff; 40]);
        let sig = k.sign(&body);
        body.extend_from_slice(&sig);
        assert_eq!(Envelope::decode(&body, run).unwrap_err(), DropReason::Malformed);
    }
}
