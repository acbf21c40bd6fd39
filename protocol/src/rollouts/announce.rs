//! Rollouts travel as blobs. Gossip carries a peer's signed [`Announce`]
//! (its batch's hash, size and group count, a few dozen bytes); a receiver
//! fetches the payload, the batch's bincode encoding, from the peer that
//! relayed the announcement or from its author, and checks it against the
//! signed announcement before it decodes anything ([`Announce::open`]).
//!
//! Which side erred matters: bytes that do not hash to the announcement are
//! the provider's fault (any relay can serve them; another is asked), while
//! bytes that hash right but do not decode to the batch announced are the
//! author's (it signed their hash).

use super::{MAX_COMPLETION_BYTES, MAX_GROUP, MAX_ROLLOUTS, RolloutBatch, RolloutError};
use crate::id::Hash;
use serde::de::{Deserializer, Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;

/// The most bytes a batch of `groups` groups of `group` completions of at
/// most `chars` bytes encodes to (each length prefix, reward and task
/// reference counted).
pub const fn batch_bound(groups: usize, group: usize, chars: usize) -> usize {
    groups * (16 + group * (chars + 8)) + 32
}

/// The largest encoded batch: [`MAX_ROLLOUTS`] groups of [`MAX_GROUP`]
/// completions of [`MAX_COMPLETION_BYTES`] (about 2 MiB; the wire bounds
/// admit no larger batch). A run's spec bounds its batches further
/// ([`Rules::max_batch_bytes`](super::Rules::max_batch_bytes)).
pub const MAX_BATCH_BYTES: usize = batch_bound(MAX_ROLLOUTS, MAX_GROUP, MAX_COMPLETION_BYTES);

/// Decodes a sequence of at most `N` elements, refusing a longer one from
/// its length prefix, before anything is allocated for it (bincode's serde
/// path counts string bytes against its limit, not vectors: a payload of
/// a million empty strings would otherwise decode to 24 MB of headers).
pub(super) fn at_most<'de, D, T, const N: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T, const N: usize>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Bounded<T, N> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "at most {N} elements")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let hint = seq.size_hint().unwrap_or(0);
            if hint > N {
                return Err(A::Error::invalid_length(hint, &self));
            }
            let mut v = Vec::with_capacity(hint);
            while let Some(x) = seq.next_element()? {
                if v.len() == N {
                    return Err(A::Error::invalid_length(N + 1, &self));
                }
                v.push(x);
            }
            Ok(v)
        }
    }
    d.deserialize_seq(Bounded::<T, N>(PhantomData))
}

/// [`RolloutBatch::rollouts`], decoded: at most [`MAX_ROLLOUTS`].
pub(super) fn de_groups<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<super::Rollout>, D::Error> {
    at_most::<D, super::Rollout, MAX_ROLLOUTS>(d)
}

/// [`Rollout::completions`](super::Rollout::completions), decoded: at most
/// [`MAX_GROUP`].
pub(super) fn de_completions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    at_most::<D, String, MAX_GROUP>(d)
}

/// [`Rollout::rewards`](super::Rollout::rewards), decoded: at most
/// [`MAX_GROUP`].
pub(super) fn de_rewards<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
    at_most::<D, f32, MAX_GROUP>(d)
}

/// bincode's decode limit for a payload: what it counts while decoding is
/// a little over the largest batch's encoding (the bound's test decodes
/// it), so twice the payload bound.
const DECODE_LIMIT: usize = 2 * MAX_BATCH_BYTES;

/// A peer's rollouts of a round, announced on gossip (the payload of
/// [`Message::Rollouts`](crate::Message::Rollouts)); the batch itself is
/// the blob `hash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// The batch's session (see [`RolloutBatch::session`]).
    pub session: u64,
    /// The batch's round (the envelope's round too).
    pub round: u64,
    /// BLAKE3 of the encoded batch.
    pub hash: Hash,
    /// Its length in bytes.
    pub bytes: u32,
    /// Its task groups.
    pub groups: u32,
}

/// What went wrong with a fetched payload, and whose fault it is.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PayloadError {
    /// Not the announced bytes: the provider's fault (ask another).
    #[error("{0} bytes that are not the announced blob")]
    WrongBytes(usize),
    /// The announced bytes, but not the batch announced: the author's.
    #[error("{0}")]
    Bad(RolloutError),
}

impl Announce {
    /// Encodes a batch for publishing: its announcement and its payload.
    /// Fails on a batch over the wire bounds (which no receiver would take).
    pub fn of(batch: &RolloutBatch) -> Result<(Announce, Vec<u8>), RolloutError> {
        batch.validate()?;
        if batch.rollouts.is_empty() {
            return Err(RolloutError::Invalid("an empty batch".into()));
        }
        let bytes = bincode::serde::encode_to_vec(batch, bincode::config::standard())
            .map_err(|e| RolloutError::Invalid(e.to_string()))?;
        if bytes.len() > MAX_BATCH_BYTES {
            return Err(RolloutError::TooLarge(format!("{} bytes (at most {MAX_BATCH_BYTES})", bytes.len())));
        }
        let a = Announce {
            session: batch.session,
            round: batch.round,
            hash: Hash::of(&bytes),
            bytes: bytes.len() as u32,
            groups: batch.rollouts.len() as u32,
        };
        Ok((a, bytes))
    }

    /// Checks an announcement before anything is fetched for it: its round
    /// is the envelope's, its size and group count within the bounds.
    pub fn check(&self, envelope_round: u64) -> Result<(), RolloutError> {
        if self.round != envelope_round {
            return Err(RolloutError::Invalid(format!(
                "announces round {} in an envelope of round {envelope_round}",
                self.round
            )));
        }
        if self.bytes == 0 || self.bytes as usize > MAX_BATCH_BYTES {
            return Err(RolloutError::TooLarge(format!("{} bytes (1..={MAX_BATCH_BYTES})", self.bytes)));
        }
        if self.groups == 0 || self.groups as usize > MAX_ROLLOUTS {
            return Err(RolloutError::TooLarge(format!("{} task groups (1..={MAX_ROLLOUTS})", self.groups)));
        }
        Ok(())
    }

    /// Opens a fetched payload: its length and hash first (no decoding of
    /// bytes that are not the announced ones), then a bounded decode, then
    /// the batch must be the one announced (session, round, groups) and
    /// within the wire bounds. The run's rules and re-scoring follow in
    /// [`Pool::offer`](super::Pool::offer).
    pub fn open(&self, bytes: &[u8]) -> Result<RolloutBatch, PayloadError> {
        if bytes.len() != self.bytes as usize || Hash::of(bytes) != self.hash {
            return Err(PayloadError::WrongBytes(bytes.len()));
        }
        let bad = |why: String| PayloadError::Bad(RolloutError::Invalid(why));
        let cfg = bincode::config::standard().with_limit::<DECODE_LIMIT>();
        let batch = match bincode::serde::decode_from_slice::<RolloutBatch, _>(bytes, cfg) {
            Ok((b, used)) if used == bytes.len() => b,
            Ok(_) => return Err(bad("trailing bytes after the batch".into())),
            Err(e) => return Err(bad(format!("the payload does not decode: {e}"))),
        };
        if (batch.session, batch.round, batch.rollouts.len()) != (self.session, self.round, self.groups as usize) {
            return Err(bad(format!(
                "a batch of session {} round {} with {} groups, announced as session {} round {} with {}",
                batch.session,
                batch.round,
                batch.rollouts.len(),
                self.session,
                self.round,
                self.groups
            )));
        }
        batch.validate().map_err(PayloadError::Bad)?;
        Ok(batch)
    }
}
