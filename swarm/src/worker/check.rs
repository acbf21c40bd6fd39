//! Checking another peer's contribution: the verifier's and the referee's
//! work. Everything is re-computed from the blobs the contribution names
//! and compared with what it committed to.

use super::model::{Model, batch_seed, hash_f32};
use protocol::Hash;
use protocol::codec;
use protocol::round::{CheckJob, Fault};
use trainer::InnerState;

/// The blobs a check reads (their hashes were checked when they arrived).
#[derive(Debug)]
pub struct CheckBlobs {
    /// The state at the start of the round (parameters, then velocity).
    pub start: std::sync::Arc<Vec<u8>>,
    /// The encoded pseudo-gradient.
    pub blob: std::sync::Arc<Vec<u8>>,
    /// The inner state at the start of each segment of the job's `replay`,
    /// in its order (none for segment 0: it starts at the round's state).
    pub starts: Vec<Option<std::sync::Arc<Vec<u8>>>>,
    /// The chain's last inner state.
    pub last: std::sync::Arc<Vec<u8>>,
}

impl Model {
    /// Checks `job`'s contribution of run `run`; the first fault found, or
    /// none. Costs one segment of training plus a few passes over the
    /// parameters.
    pub fn check(&self, run: &Hash, job: &CheckJob, blobs: &CheckBlobs) -> Option<Fault> {
        let n = self.params();
        let h = self.spec().train.inner_steps;
        let k = self.spec().verify.every(h);
        let seg = job.segment;
        let leaves = &job.leaves;
        if leaves.len() != self.spec().verify.segments(h) as usize + 1 || blobs.start.len() != 8 * n {
            return Some(Fault::Malformed);
        }
        let start: Vec<f32> =
            blobs.start[..4 * n].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let first = InnerState::fresh(&start);
        if Hash(first.hash()) != leaves[0] {
            return Some(Fault::BadStart);
        }
        let seed = batch_seed(run, job.round, &job.contributor);
        let last_seg = leaves.len() as u32 - 2;
        let state_at = |s: u32, blob: Option<&std::sync::Arc<Vec<u8>>>| match blob {
            None if s == 0 => Some(first.clone()),
            Some(b) => InnerState::decode(b, n).ok().filter(|x| x.step == s * k),
            None => None,
        };
        if job.replay.len() != blobs.starts.len() || job.replay.iter().any(|s| *s > last_seg) {
            return Some(Fault::Malformed);
        }
        for (&s, blob) in job.replay.iter().zip(&blobs.starts) {
            let Some(from) = state_at(s, blob.as_ref()) else { return Some(Fault::Malformed) };
            let until = ((s + 1) * k).min(h);
            match self.trainer().replay(from, &self.train_config(), seed, until) {
                Ok(end) if Hash(end.hash()) == leaves[s as usize + 1] => {}
                _ if s == last_seg && s != seg => return Some(Fault::LastSegment),
                _ => return Some(Fault::Segment),
            }
        }
        let last = match InnerState::decode(&blobs.last, n) {
            Ok(s) if s.step == h => s,
            _ => return Some(Fault::Malformed),
        };
        let raw: Vec<f32> = start.iter().zip(&last.params).map(|(g, l)| g - l).collect();
        if hash_f32(&raw) != job.contribution.raw {
            return Some(Fault::RawMismatch);
        }
        if self.blob_matches(&blobs.blob, &raw, job.contribution.residual) { None } else { Some(Fault::BlobMismatch) }
    }

    /// Whether the encoded blob decodes to `raw` within the codec's bound
    /// plus the declared residual `r` (which must itself be plausible: no
    /// larger than the pseudo-gradient). With top-k, values not sent are
    /// not bounded (only the decode is checked).
    fn blob_matches(&self, blob: &[u8], raw: &[f32], r: f32) -> bool {
        let Ok(decoded) = codec::decode(blob, raw.len() as u64) else { return false };
        let c = self.codec();
        if c.kept(raw.len()) < raw.len() {
            return true;
        }
        let max = raw.iter().fold(0f32, |m, x| m.max(x.abs()));
        if !(r.is_finite() && r <= max) {
            return false;
        }
        let block = c.block_size as usize;
        for (d, x) in decoded.chunks(block).zip(raw.chunks(block)) {
            let absmax = x.iter().fold(0f32, |m, v| m.max(v.abs())) + r;
            for (a, b) in d.iter().zip(x) {
                let allowed = codec::error_bound(c.kind, absmax, b.abs() + r) + r;
                if (a - b).abs() > allowed * (1.0 + 1e-5) + f32::MIN_POSITIVE {
                    return false;
                }
            }
        }
        true
    }
}
