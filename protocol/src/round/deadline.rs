//! Adaptive round deadlines: the median of the last observed round
//! durations plus k times their median absolute deviation, clamped between a
//! floor and a ceiling from the run spec. Until enough rounds were seen the
//! deadline is the ceiling, so a new swarm never cuts a slow peer on a guess.

use crate::time::Time;
use std::collections::VecDeque;

/// Rounds needed before the estimate replaces the ceiling.
pub const MIN_SAMPLES: usize = 3;
/// Rounds remembered.
pub const WINDOW: usize = 16;

/// The deadline estimator.
#[derive(Clone, Debug, PartialEq)]
pub struct Deadline {
    samples: VecDeque<Time>,
    k: f64,
    floor: Time,
    ceiling: Time,
}

impl Deadline {
    /// `floor <= deadline <= ceiling`; `k` multiplies the MAD.
    pub fn new(floor: Time, ceiling: Time, k: f64) -> Deadline {
        Deadline { samples: VecDeque::new(), k, floor: floor.min(ceiling), ceiling }
    }

    /// Records how long a round took.
    pub fn observe(&mut self, duration: Time) {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(duration);
    }

    /// The current deadline (time from round start).
    pub fn current(&self) -> Time {
        if self.samples.len() < MIN_SAMPLES {
            return self.ceiling;
        }
        let mut v: Vec<Time> = self.samples.iter().copied().collect();
        let med = median(&mut v);
        let mut dev: Vec<Time> = self.samples.iter().map(|s| s.abs_diff(med)).collect();
        let mad = median(&mut dev);
        let d = med as f64 + self.k * mad as f64;
        (d.round() as Time).clamp(self.floor, self.ceiling)
    }
}

fn median(v: &mut [Time]) -> Time {
    v.sort_unstable();
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_observed_rounds_within_bounds() {
        let mut d = Deadline::new(1_000, 60_000, 4.0);
        assert_eq!(d.current(), 60_000, "no guess before data");
        for t in [2_000, 2_100, 1_900, 2_050, 1_950] {
            d.observe(t);
        }
        // median 2000, MAD 50 -> 2200
        assert_eq!(d.current(), 2_200);
        for _ in 0..WINDOW {
            d.observe(10);
        }
        assert_eq!(d.current(), 1_000, "floor");
        for _ in 0..WINDOW {
            d.observe(100_000);
        }
        assert_eq!(d.current(), 60_000, "ceiling");
    }
}
