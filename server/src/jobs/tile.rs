//! One tile of a running job as the master sees it, and the only code that
//! moves it from state to state:
//!
//! ```text
//! Unsent --begin_send--> Sending --sent--> Placed --overdue: taken--> Consumed --complete--> Done
//!                           ^   \--send_failed--> (back where it was)    |
//!                           +---- begin_send (a retry, from either) ----/
//! ```
//!
//! A tile is `Consumed` once the deadline sweep sees the workers' group
//! past its task (a worker took it): its deadline runs from then. A result
//! may complete it from `Placed` too, when it comes before the sweep looks.
//! SQLite holds the same story durably (`tiles.status`, partition, offset,
//! attempts); this is what the engine decides with.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::window::Slot;
use crate::kafka::Position;

/// Where a tile's latest task is on the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug)]
enum Phase {
    /// No task on the broker yet.
    Unsent,
    /// A task is being published; where the one before it is, and since
    /// when a worker has had it, if any.
    Sending { before: Option<(Placement, Option<Instant>)> },
    /// Its latest task is on the broker, not yet taken.
    Placed(Placement),
    /// A worker took its latest task (the workers' group was first seen past
    /// it `since`): no result by `since` + the tile timeout sends it again.
    Consumed { at: Placement, since: Instant },
    /// Its result is stored.
    Done,
}

impl Phase {
    /// Waiting at `at` for a result, taken `since` if known.
    fn waiting(at: Placement, since: Option<Instant>) -> Self {
        since.map_or(Phase::Placed(at), |since| Phase::Consumed { at, since })
    }

    /// Where its task waits, and since when a worker has had it.
    fn waits_at(&self) -> Option<(Placement, Option<Instant>)> {
        match *self {
            Phase::Placed(at) => Some((at, None)),
            Phase::Consumed { at, since } => Some((at, Some(since))),
            Phase::Unsent | Phase::Sending { .. } | Phase::Done => None,
        }
    }
}

/// Why the deadline sweep sends a tile again.
#[derive(Debug, PartialEq, Eq)]
pub enum Overdue {
    /// The broker no longer has its task.
    Lost,
    /// A worker took it longer than the tile timeout ago and never answered.
    Unanswered(Duration),
}

impl std::fmt::Display for Overdue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Overdue::Lost => f.write_str("its task is no longer on the broker"),
            Overdue::Unanswered(timeout) => write!(f, "no result {}s after a worker took it", timeout.as_secs()),
        }
    }
}

#[derive(Debug)]
pub struct Tile {
    phase: Phase,
    /// Times its task was published.
    attempts: u32,
    /// Of those, sendings a worker declined as unsupported: they spend no attempt.
    bounces: u32,
    /// Its place in the dispatch window while its task is outstanding.
    slot: Option<Slot>,
}

impl Tile {
    /// A tile not sent yet.
    pub fn unsent() -> Self {
        Tile { phase: Phase::Unsent, attempts: 0, bounces: 0, slot: None }
    }

    /// A tile whose result a previous run stored.
    pub fn done() -> Self {
        Tile { phase: Phase::Done, ..Tile::unsent() }
    }

    /// A tile a previous run sent `attempts` times, the last one to `placement`
    /// if the broker acknowledged it.
    pub fn resumed(attempts: u32, placement: Option<Placement>) -> Self {
        let phase = placement.map_or(Phase::Unsent, Phase::Placed);
        Tile { phase, attempts, ..Tile::unsent() }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    pub fn is_unsent(&self) -> bool {
        matches!(self.phase, Phase::Unsent)
    }

    /// Times its task was published.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Attempts that count against the limit: declines by workers that
    /// cannot run the job do not.
    pub fn spent_attempts(&self) -> u32 {
        self.attempts.saturating_sub(self.bounces)
    }

    /// Where its latest task is, while it waits there for a result.
    pub fn placement(&self) -> Option<Placement> {
        self.phase.waits_at().map(|(at, _)| at)
    }

    /// Whether a worker's report about its `attempt` (0: unknown) concerns
    /// the task now outstanding, not an earlier one already sent again.
    pub fn answers_latest(&self, attempt: u32) -> bool {
        self.phase.waits_at().is_some() && (attempt == 0 || attempt == self.attempts)
    }

    /// Gives it the window slot its task, left on the broker by a previous
    /// run, holds.
    pub fn hold(&mut self, slot: Slot) {
        if !self.is_done() && self.slot.is_none() {
            self.slot = Some(slot);
        }
    }

    /// Starts a sending, unless it is done or being sent: a first sending
    /// brings its window `slot`, a later one moves its slot to another
    /// partition, and none lands on a partition in `avoid` while another is
    /// left. Returns the partition to send to (`None`: the producer picks),
    /// or `None` outside if there is nothing to send.
    pub fn begin_send(&mut self, slot: Option<Slot>, avoid: &BTreeSet<i32>) -> Option<Option<i32>> {
        let before = match self.phase {
            Phase::Unsent => None,
            Phase::Placed(_) | Phase::Consumed { .. } => self.phase.waits_at(),
            Phase::Sending { .. } | Phase::Done => return None,
        };
        self.phase = Phase::Sending { before };
        match (slot, &mut self.slot) {
            (Some(slot), held) => *held = Some(slot),
            (None, Some(held)) => held.move_away(avoid),
            (None, None) => {} // a resumed task still waiting for its slot
        }
        if let Some(held) = self.slot.as_mut().filter(|s| avoid.contains(&s.partition())) {
            held.move_away(avoid);
        }
        Some(self.slot.as_ref().map(Slot::partition))
    }

    /// The broker acknowledged the task at `at`; it was the tile's
    /// `attempts`th (as the store counts them).
    pub fn sent(&mut self, at: Placement, attempts: u32) {
        if let Phase::Sending { .. } = self.phase {
            self.phase = Phase::Placed(at);
            self.attempts = attempts;
        }
    }

    /// The sending failed: the tile is where it was before.
    pub fn send_failed(&mut self) {
        if let Phase::Sending { before } = self.phase {
            self.phase = before.map_or(Phase::Unsent, |(at, since)| Phase::waiting(at, since));
        }
    }

    /// Its result is stored; `false` if it was already. Its window slot
    /// goes to the next task.
    pub fn complete(&mut self) -> bool {
        if self.is_done() {
            return false;
        }
        self.phase = Phase::Done;
        self.slot = None;
        true
    }

    /// A worker declined its task as unsupported: counts a bounce and says
    /// which partition's worker it was.
    pub fn bounce(&mut self) -> Option<i32> {
        let at = self.placement()?;
        self.bounces += 1;
        Some(at.partition)
    }

    /// Judges the task at `at` against where the workers' group stands in
    /// its partition at `now`: overdue if the broker lost it, or if a worker
    /// took it `timeout` ago or more without answering (then it is `Placed`
    /// again, its clock stopped). A task first seen taken makes the tile
    /// `Consumed`. A tile that moved on since `at` was read is never overdue.
    pub fn overdue(&mut self, at: Placement, position: Position, now: Instant, timeout: Duration) -> Option<Overdue> {
        let (placed, since) = self.phase.waits_at()?;
        if placed != at {
            return None;
        }
        if at.offset >= position.end {
            return Some(Overdue::Lost);
        }
        if position.committed.is_some_and(|c| c > at.offset) {
            let since = since.unwrap_or(now);
            if now.duration_since(since) >= timeout {
                self.phase = Phase::Placed(at);
                return Some(Overdue::Unanswered(timeout));
            }
            self.phase = Phase::Consumed { at, since };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Placement = Placement { partition: 2, offset: 40 };

    #[test]
    fn a_taken_task_makes_the_tile_consumed_and_a_retry_or_a_failed_one_keeps_its_clock() {
        let (timeout, t0) = (Duration::from_secs(10), Instant::now());
        let taken = Position { committed: Some(41), end: 41 };
        let mut tile = Tile::resumed(1, Some(AT));
        assert!(matches!(tile.phase, Phase::Placed(AT)));
        assert_eq!(tile.overdue(AT, taken, t0, timeout), None);
        assert!(matches!(tile.phase, Phase::Consumed { at: AT, since } if since == t0));
        assert!(tile.answers_latest(1) && tile.placement() == Some(AT), "still waiting for its result");
        // A sending that fails leaves it consumed, its deadline unmoved.
        tile.begin_send(None, &BTreeSet::new()).unwrap();
        tile.send_failed();
        assert!(matches!(tile.phase, Phase::Consumed { at: AT, since } if since == t0));
        assert_eq!(tile.overdue(AT, taken, t0 + timeout, timeout), Some(Overdue::Unanswered(timeout)));
        assert!(matches!(tile.phase, Phase::Placed(AT)), "not answered: its clock stops until it is seen taken again");
        assert!(tile.complete(), "a result completes a consumed or a placed tile");
    }

    #[test]
    fn a_tile_goes_unsent_sending_placed_done() {
        let mut tile = Tile::unsent();
        assert!(tile.is_unsent() && tile.placement().is_none());
        assert_eq!(tile.begin_send(None, &BTreeSet::new()), Some(None));
        assert_eq!(tile.begin_send(None, &BTreeSet::new()), None, "already being sent");
        assert!(!tile.answers_latest(1), "no report counts while it is being sent");
        tile.sent(AT, 1);
        assert_eq!((tile.placement(), tile.attempts()), (Some(AT), 1));
        assert!(tile.answers_latest(1) && tile.answers_latest(0) && !tile.answers_latest(2));
        assert!(tile.complete());
        assert!(!tile.complete(), "a duplicate result changes nothing");
        assert!(tile.is_done() && tile.placement().is_none());
        assert_eq!(tile.begin_send(None, &BTreeSet::new()), None, "a done tile is not sent again");
    }

    #[test]
    fn a_failed_sending_leaves_the_tile_where_it_was() {
        let mut tile = Tile::resumed(1, Some(AT));
        tile.begin_send(None, &BTreeSet::new()).unwrap();
        assert_eq!(tile.placement(), None);
        tile.send_failed();
        assert_eq!(tile.placement(), Some(AT));
        let mut fresh = Tile::unsent();
        fresh.begin_send(None, &BTreeSet::new()).unwrap();
        fresh.send_failed();
        assert!(fresh.is_unsent());
    }

    #[test]
    fn declines_spend_no_attempt() {
        let mut tile = Tile::resumed(3, Some(AT));
        assert_eq!(tile.bounce(), Some(2));
        assert_eq!((tile.attempts(), tile.spent_attempts()), (3, 2));
        assert_eq!(Tile::unsent().bounce(), None, "nothing placed, no partition declined");
    }

    #[test]
    fn the_deadline_counts_from_when_a_worker_took_the_task() {
        let timeout = Duration::from_secs(10);
        let t0 = Instant::now();
        let waiting = Position { committed: Some(40), end: 41 };
        let taken = Position { committed: Some(41), end: 41 };
        let mut tile = Tile::resumed(1, Some(AT));
        assert_eq!(tile.overdue(AT, waiting, t0, timeout), None, "still queued");
        assert_eq!(tile.overdue(AT, taken, t0, timeout), None, "just taken");
        assert_eq!(tile.overdue(AT, taken, t0 + timeout / 2, timeout), None);
        assert_eq!(tile.overdue(AT, taken, t0 + timeout, timeout), Some(Overdue::Unanswered(timeout)));
        assert_eq!(tile.overdue(AT, taken, t0 + timeout, timeout), None, "the clock starts again");
        let gone = Position { committed: None, end: 40 };
        assert_eq!(tile.overdue(AT, gone, t0, timeout), Some(Overdue::Lost));
        let moved = Placement { partition: 2, offset: 50 };
        assert_eq!(tile.overdue(moved, gone, t0, timeout), None, "judged against an old placement");
    }
}
