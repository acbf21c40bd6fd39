//! Our own small, seeded, platform-independent random number generators.
//!
//! Everything that must be reproducible bit-for-bit across processes and machines (initial
//! parameters, the data split, batch sampling) draws from here, never from burn's global
//! generator. Only integer arithmetic and exactly rounded float operations are used.

pub use protocol::rng::SplitMix64;

/// xoshiro256**: the general-purpose generator of this crate.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose state is expanded from `seed` with SplitMix64.
    pub fn from_u64(seed: u64) -> Self {
        let mut sm = SplitMix64::new(seed);
        Self { s: [sm.next_u64(), sm.next_u64(), sm.next_u64(), sm.next_u64()] }
    }

    /// A generator seeded from 32 bytes (four little-endian `u64` words).
    ///
    /// The words are passed through SplitMix64 once more, so that similar seeds (and the
    /// all-zero seed, which xoshiro cannot use directly) still give unrelated streams.
    pub fn from_bytes(seed: [u8; 32]) -> Self {
        let mut s = [0u64; 4];
        let mut mix = SplitMix64::new(0x5357_4152_4D5F_5452); // "SWARM_TR"
        for (i, word) in s.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&seed[i * 8..i * 8 + 8]);
            *word = u64::from_le_bytes(b) ^ mix.next_u64();
            *word = SplitMix64::new(*word).next_u64();
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        Self { s }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform `f32` in `[0, 1)` with 24 random bits (exactly representable).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// A uniform `f32` in `[-bound, bound)`.
    pub fn uniform_sym(&mut self, bound: f32) -> f32 {
        (self.next_f32() * 2.0 - 1.0) * bound
    }

    /// A uniform integer in `0..n` (`n > 0`), by multiply-shift (bias below 2^-40 for our sizes).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_seed_dependent() {
        let a: Vec<u64> = {
            let mut r = Rng::from_bytes([7; 32]);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::from_bytes([7; 32]);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let mut seed = [7; 32];
        seed[31] ^= 1;
        let c: Vec<u64> = {
            let mut r = Rng::from_bytes(seed);
            (0..8).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut z = Rng::from_bytes([0; 32]);
        assert_ne!(z.next_u64(), z.next_u64());
    }

    #[test]
    fn ranges() {
        let mut r = Rng::from_u64(3);
        let mut seen = [false; 10];
        for _ in 0..10_000 {
            let f = r.next_f32();
            assert!((0.0..1.0).contains(&f));
            let u = r.uniform_sym(0.5);
            assert!((-0.5..0.5).contains(&u));
            seen[r.below(10)] = true;
        }
        assert!(seen.iter().all(|s| *s));
        let mut v: Vec<usize> = (0..100).collect();
        r.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }
}
