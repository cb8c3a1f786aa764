//! Replies held back while more tasks of the same job are queued, so that
//! several reach the broker in one produce request: nisshi's cost is per
//! request (a transaction, a watermark read, statements prepared afresh),
//! not per byte.

use std::time::{Duration, Instant};

/// How long the oldest held reply may wait, at most.
pub const LINGER: Duration = Duration::from_millis(100);

pub struct Held<T> {
    replies: Vec<T>,
    /// When the oldest held reply was ready.
    since: Option<Instant>,
    /// How many may be held at once.
    limit: usize,
}

impl<T> Held<T> {
    pub fn new(limit: usize) -> Self {
        Self { replies: Vec::new(), since: None, limit: limit.max(1) }
    }

    pub fn len(&self) -> usize {
        self.replies.len()
    }

    pub fn push(&mut self, reply: T, now: Instant) {
        self.since.get_or_insert(now);
        self.replies.push(reply);
    }

    /// Whether the held replies must go now: unless the next task is queued
    /// and of the same job as the last (`alike`), whose time (`tile`)
    /// predicts its own; when the limit is held; or when one more such tile
    /// would keep the oldest past [`LINGER`].
    pub fn due(&self, now: Instant, alike: bool, tile: Duration) -> bool {
        let Some(since) = self.since else { return false };
        !alike || self.replies.len() >= self.limit || now.saturating_duration_since(since) + tile >= LINGER
    }

    /// The held replies, oldest first; none are held after.
    pub fn take(&mut self) -> Vec<T> {
        self.since = None;
        std::mem::take(&mut self.replies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(10);

    #[test]
    fn nothing_held_is_never_due() {
        let held: Held<u32> = Held::new(4);
        assert!(!held.due(Instant::now(), false, LINGER));
    }

    #[test]
    fn replies_wait_while_fast_tiles_keep_coming() {
        let start = Instant::now();
        let mut held = Held::new(4);
        held.push(1, start);
        held.push(2, start + FAST);
        assert!(!held.due(start + FAST, true, FAST));
        assert!(held.due(start + FAST, false, FAST), "no task queued, or another job's: they go");
    }

    #[test]
    fn the_limit_sends_them() {
        let start = Instant::now();
        let mut held = Held::new(2);
        held.push(1, start);
        assert!(!held.due(start, true, FAST));
        held.push(2, start);
        assert!(held.due(start, true, FAST));
        assert_eq!(held.take(), [1, 2]);
        assert_eq!(held.len(), 0);
        assert!(!held.due(start, false, FAST), "taken");
    }

    #[test]
    fn a_reply_never_waits_out_another_slow_tile() {
        let start = Instant::now();
        let mut held = Held::new(8);
        held.push(1, start);
        assert!(held.due(start, true, LINGER), "a tile as slow as the linger");
        assert!(!held.due(start + LINGER / 2, true, Duration::ZERO));
        assert!(held.due(start + LINGER, true, Duration::ZERO), "the linger is up");
    }

    #[test]
    fn the_clock_restarts_after_a_take() {
        let start = Instant::now();
        let mut held = Held::new(8);
        held.push(1, start);
        held.take();
        held.push(2, start + LINGER);
        assert!(!held.due(start + LINGER + FAST, true, FAST));
    }
}
