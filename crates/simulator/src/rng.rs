//! Deterministic randomness for the synthetic world.
//!
//! Every generated value is a pure function of `(seed, user, day, stream, ...)`: a SplitMix64
//! hash picks the starting state and a SplitMix64 sequence continues from it. Nothing here
//! depends on a crate's RNG algorithm, so the same flags give the same bytes across builds
//! and dependency upgrades.

/// Streams keep the draws of unrelated generators independent of each other.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    Profile = 1,
    Sync = 2,
    Minutes = 3,
    Measures = 4,
    Workouts = 5,
    Sleep = 6,
    SleepSegments = 7,
    Heart = 8,
    Phone = 9,
    Tokens = 10,
    Faults = 11,
    Devices = 12,
}

#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a list of integers (order matters).
pub fn hash(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5851_F42D_4C95_7F2D, |h, p| mix(h ^ mix(*p)))
}

/// A small, fast, deterministic generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, user: u64, day: i64, stream: Stream) -> Rng {
        Rng(hash(&[seed, user, day as u64, stream as u64]))
    }

    pub fn from_parts(parts: &[u64]) -> Rng {
        Rng(hash(parts))
    }

    /// SplitMix64: the state walks by the golden ratio and each step is finalized by `mix`.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let z = self.0;
        self.0 = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(z)
    }

    /// Uniform in [0, 1).
    #[inline]
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [lo, hi] (inclusive).
    #[inline]
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        debug_assert!(hi >= lo);
        lo + (self.next_u64() % ((hi - lo + 1) as u64)) as i64
    }

    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Approximately normal (mean 0, sd 1): Irwin-Hall with 4 uniforms, cheap and bounded.
    #[inline]
    pub fn normal(&mut self) -> f64 {
        (self.f64() + self.f64() + self.f64() + self.f64() - 2.0) * 1.732_050_8
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }

    /// Pick by weights.
    pub fn weighted<'a, T>(&mut self, items: &'a [(T, u32)]) -> &'a T {
        let total: u32 = items.iter().map(|(_, w)| *w).sum();
        let mut x = (self.next_u64() % total as u64) as u32;
        for (item, w) in items {
            if x < *w {
                return item;
            }
            x -= w;
        }
        &items[items.len() - 1].0
    }

    /// 40 lowercase hex characters, the shape of Withings device ids and tokens.
    pub fn hex40(&mut self) -> String {
        let mut s = String::with_capacity(40);
        for _ in 0..3 {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(40);
        s
    }
}

/// Round to `digits` decimals (values such as 7104.58 m or 512.37 kcal).
pub fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_parts_same_sequence_and_ranges_hold() {
        let mut a = Rng::new(7, 1, 100, Stream::Minutes);
        let mut b = Rng::new(7, 1, 100, Stream::Minutes);
        let mut c = Rng::new(7, 1, 101, Stream::Minutes);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        for _ in 0..10_000 {
            let r = a.range(-3, 5);
            assert!((-3..=5).contains(&r));
            let f = a.f64();
            assert!((0.0..1.0).contains(&f));
        }
        assert_eq!(a.hex40().len(), 40);
    }
}
