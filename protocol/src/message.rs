//! What peers say to each other: the payloads of signed envelopes and the
//! records they carry. Pure data (serde); the envelope signs and bounds it,
//! the round state machine interprets it.

use crate::id::{Hash, PeerId};
use serde::{Deserialize, Serialize};

/// What a peer is doing, as told in its hellos.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Present, waiting for the run to start (or for a manifest to sync from).
    Waiting,
    /// Fetching or loading the state named in a manifest.
    Syncing,
    /// Holds the current state; trains and contributes.
    Active,
}

/// One manifest a peer applied: its round and the BLAKE3 hash of its signed
/// envelope (the manifest's id). Hellos list the last few, so that peers can
/// compare histories and joiners can count confirmations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AppliedManifest {
    /// The round the manifest closed.
    pub round: u64,
    /// BLAKE3 of the manifest's signed envelope.
    pub id: Hash,
}

/// A peer's claim for a round, and its commitments: "my pseudo-gradient is
/// the blob `hash`, encoded from the raw pseudo-gradient `raw` plus an
/// error-feedback residual of at most `residual` per value, and I trained
/// it through the chain of inner states `chain`". Anyone can re-execute any
/// segment of the chain from its start state and compare.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// BLAKE3 of the encoded pseudo-gradient.
    pub hash: Hash,
    /// Training samples behind it (the averaging weight).
    pub samples: u64,
    /// The state the sender trained from (for divergence checks).
    pub base_state: Hash,
    /// BLAKE3 of the raw pseudo-gradient (f32 little-endian), before the
    /// codec and the error feedback.
    pub raw: Hash,
    /// Largest magnitude of the error-feedback residual added to the raw
    /// pseudo-gradient before encoding.
    pub residual: f32,
    /// BLAKE3 of the chain blob: the hashes of the inner states at steps 0,
    /// k, 2k, ..., H (`verify.checkpoint_every` = k), 32 bytes each.
    pub chain: Hash,
    /// The EVM address the sender's credits are paid to (settlement): bound
    /// to the peer id by this signed announcement. The ledger keeps the
    /// latest one per peer.
    pub payee: Option<Address>,
    /// The sender's signature of the last ledger epoch root it computed
    /// (for the settlement contract's quorum).
    pub attest: Option<Attestation>,
}

/// A 20-byte EVM address.
pub type Address = [u8; 20];

/// A secp256k1 signature (r, s, v: 65 bytes) as the EVM's `ecrecover` takes it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EthSignature(pub [u8; 65]);

impl std::fmt::Debug for EthSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EthSignature({})", hex::encode(&self.0[..4]))
    }
}

impl Serialize for EthSignature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.as_slice().serialize(s)
    }
}

impl<'de> Deserialize<'de> for EthSignature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EthSignature, D::Error> {
        let v: Vec<u8> = Deserialize::deserialize(d)?;
        v.try_into().map(EthSignature).map_err(|_| serde::de::Error::custom("an EVM signature is 65 bytes"))
    }
}

/// A contributor's signature of an epoch's ledger root: the settlement
/// address (its `payee`) signed [`crate::ledger::root_digest`] of that epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The epoch.
    pub epoch: u64,
    /// The root the sender computed.
    pub root: [u8; 32],
    /// Its signature of the epoch's root digest.
    pub signature: EthSignature,
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({})", hex::encode(&self.0[..4]))
    }
}

impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.as_slice().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Signature, D::Error> {
        let v: Vec<u8> = Deserialize::deserialize(d)?;
        v.try_into().map(Signature).map_err(|_| serde::de::Error::custom("a signature is 64 bytes"))
    }
}

/// One included contribution: the contributor's own announcement, with its
/// signature, so an aggregator can neither invent nor alter entries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The contributor.
    pub peer: PeerId,
    /// Its announcement for the manifest's round.
    pub contribution: Contribution,
    /// Its signature of that announcement's envelope.
    pub signature: Signature,
}

impl ManifestEntry {
    /// BLAKE3 of the encoded pseudo-gradient.
    pub fn hash(&self) -> Hash {
        self.contribution.hash
    }

    /// The averaging weight.
    pub fn samples(&self) -> u64 {
        self.contribution.samples
    }
}

/// What a check found wrong with a contribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Fault {
    /// The chain does not start at the round's state (fresh optimizer).
    BadStart,
    /// Re-executing the drawn segment from its committed start state did
    /// not give the committed end state.
    Segment,
    /// The chain's last state does not give the committed raw
    /// pseudo-gradient.
    RawMismatch,
    /// The encoded blob does not decode to the raw pseudo-gradient within
    /// the codec's bound plus the declared residual (or the residual is
    /// implausibly large).
    BlobMismatch,
    /// The chain or one of its states is not what it should be (length,
    /// size, step count, hash).
    Malformed,
    /// The contributor did not serve what the check needs.
    Unavailable,
    /// Re-executing the last segment (the link to the pseudo-gradient)
    /// did not give the chain's last state.
    LastSegment,
}

/// A verifier's or referee's finding about one contribution. The envelope
/// that carries it (signed by the checker) has the contribution's round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The id of the manifest that included the contribution.
    pub manifest: Hash,
    /// The contributor checked.
    pub contributor: PeerId,
    /// The segment re-executed.
    pub segment: u32,
    /// `None` when every check passed.
    pub fault: Option<Fault>,
}

/// A finding with its checker's signature (quoted as evidence).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignedFinding {
    /// The checker.
    pub by: PeerId,
    /// What it found.
    pub finding: Finding,
    /// Its signature of the envelope that carried the finding.
    pub signature: Signature,
}

/// A signed announcement, quoted as evidence.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignedContribution {
    /// What was announced.
    pub contribution: Contribution,
    /// The announcer's signature.
    pub signature: Signature,
}

/// Why a peer is excluded: evidence every peer can check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Evidence {
    /// A verifier accused a contribution and a majority of the dispute's
    /// referees decided: with a fault, the contributor is excluded; without,
    /// the verifier (it framed an honest peer).
    Dispute {
        /// The accusation.
        accusation: SignedFinding,
        /// The referees' findings (a majority of the committee agreeing).
        findings: Vec<SignedFinding>,
    },
    /// Two different signed announcements for one round.
    Equivocation {
        /// One.
        a: Box<SignedContribution>,
        /// The other.
        b: Box<SignedContribution>,
    },
}

/// A peer excluded by a manifest, with the evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exclusion {
    /// Who.
    pub peer: PeerId,
    /// The round of the misbehaviour.
    pub round: u64,
    /// Why.
    pub evidence: Evidence,
}

/// The aggregator's signed decision for a round (the round and aggregator are
/// the envelope's round and sender).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Hash of the state blob (parameters + outer optimizer) at the start of
    /// the round; late joiners fetch it.
    pub state: Hash,
    /// The contributions to apply, ordered by peer id.
    pub entries: Vec<ManifestEntry>,
    /// Peers excluded from here on, with the evidence.
    pub exclusions: Vec<Exclusion>,
    /// Peers excluded by earlier manifests, as its signer knows them
    /// (ascending; the first [`crate::round::MAX_MANIFEST_ENTRIES`] by id): a
    /// peer that syncs past the manifest that excluded one learns it here.
    /// Peers that apply the manifest do not check it (so a signer that
    /// lists an honest peer misleads only peers that sync to its manifest).
    pub excluded: Vec<PeerId>,
    /// Passing findings of drawn verifiers about contributions of earlier
    /// manifests (signed by the verifiers): the ledger credits the checks.
    pub checks: Vec<CheckRecord>,
    /// The root of the last ledger epoch its signer closed: a peer whose
    /// own root differs finds out.
    pub ledger: Option<EpochRoot>,
}

/// A verifier's passing finding, with the round of the contribution.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// The round of the checked contribution (its finding's envelope round).
    pub round: u64,
    /// The finding, signed by the verifier.
    pub finding: SignedFinding,
}

/// An epoch's ledger root as its signer computed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRoot {
    /// The epoch (0 = rounds 1..=epoch_rounds).
    pub epoch: u64,
    /// The Merkle root of its credits.
    pub root: [u8; 32],
    /// The sum of its credits.
    pub total: u64,
}

/// The payload of an envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Presence and progress, sent every `hello_interval`.
    Hello {
        /// What the sender is doing.
        status: Status,
        /// The sender's message counter: it grows with every hello and
        /// leave, across restarts too (a node starts it from its clock). A
        /// hello or leave whose `seq` is not above the last one seen from its
        /// sender is a replay, and is dropped.
        seq: u64,
        /// The last manifests the sender applied, newest last: joiners count
        /// these as confirmations.
        recent: Vec<AppliedManifest>,
    },
    /// The sender's pseudo-gradient for the envelope's round.
    Contribution(Contribution),
    /// The aggregator's decision for the envelope's round.
    Manifest(Manifest),
    /// A verifier's or referee's finding about a contribution of the
    /// envelope's round.
    Verdict(Finding),
    /// The sender leaves the run; `recent` as in its hellos (stragglers may
    /// still count it as a confirmation for a short while).
    Leave {
        /// The sender's message counter, as in [`Message::Hello`].
        seq: u64,
        /// The manifests it applied last.
        recent: Vec<AppliedManifest>,
    },
    /// An RL peer's rollouts of the envelope's round, announced: the batch
    /// is a blob fetched by its hash (RL runs only; a DiLoCo peer drops it).
    Rollouts(crate::rollouts::Announce),
}

impl Message {
    /// The bincode tag of [`Message::Hello`]: the first payload byte of a
    /// hello, so it can be recognised without decoding.
    pub const HELLO_TAG: u8 = 0;
}
