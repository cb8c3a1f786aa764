//! What the benches share.

use std::time::{Duration, Instant};

/// Best of `runs` runs.
pub fn best(runs: u32, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}
