//! Deterministic pseudo-random bits (xorshift64) for synthetic images: the
//! grain of test images, benchmark inputs and the conformance corpus. Not
//! for anything that must be unpredictable.

/// Marsaglia's xorshift64 (shifts 13, 7, 17): the same seed always gives the
/// same sequence, on every platform.
#[derive(Debug, Clone)]
pub struct Xorshift64(u64);

impl Xorshift64 {
    /// `seed` must not be 0 (the sequence would stay 0).
    pub fn new(seed: u64) -> Self {
        debug_assert_ne!(seed, 0, "xorshift's seed must not be 0");
        Xorshift64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_marsaglias_xorshift64() {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut noise = Xorshift64::new(state);
        for _ in 0..1000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            assert_eq!(noise.next_u64(), state);
        }
    }
}
