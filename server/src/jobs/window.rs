//! Backpressure: only a window of tasks waits on the broker at any time.
//!
//! A job's tiles are published as slots free up, not all at once, so neither
//! the master nor the broker holds a backlog that grows with the image, and a
//! broker that reads a partition's whole backlog on every fetch (nisshi does)
//! reads a few tasks instead of hundreds. The window is sized from the live
//! workers: enough queued per worker that none waits for the next task.
//!
//! The master also picks each task's partition: the one with the fewest
//! tasks outstanding, or the last one chosen while it has at most `STICKY`
//! more than that (tasks that follow each other then share a produce
//! request, which nisshi stores at a cost per partition written). A job's
//! last few tasks go strictly to the least loaded, so that its workers run
//! out of work together rather than one finishing alone. A fast worker
//! empties its partitions sooner, so it is given more; a tile sent again
//! goes to another partition than the one whose worker just failed it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Tasks outstanding per live worker: one being processed, one arriving and
/// enough queued ahead of it to cover how late a worker may hear of a new
/// task (`TASKS_FETCH_WAIT_MS`; measured: see docs/performance.md).
pub const DEFAULT_PER_WORKER: usize = 32;

/// Tasks a partition may have beyond the least loaded one's and still be
/// given the next task because it was given the last one.
const STICKY: u32 = 4;

pub struct Window {
    permits: Arc<Semaphore>,
    per_worker: usize,
    state: Mutex<State>,
    /// Whether any slot is held: a result may be on its way.
    busy: watch::Sender<bool>,
}

struct State {
    /// Permits the semaphore was given, held or not.
    size: usize,
    /// Outstanding tasks per partition of the tasks topic.
    outstanding: Vec<u32>,
    /// The partition given the last task.
    last: usize,
}

/// One outstanding task's place in the window, given back when dropped (its
/// tile is done, or its job stopped).
pub struct Slot {
    window: Arc<Window>,
    partition: usize,
    _permit: OwnedSemaphorePermit,
}

impl Window {
    /// A window over `partitions` partitions, sized for one worker until
    /// [`Window::resize`] says how many are alive.
    pub fn new(partitions: usize, per_worker: usize) -> Arc<Self> {
        let per_worker = per_worker.max(1);
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(per_worker)),
            per_worker,
            state: Mutex::new(State { size: per_worker, outstanding: vec![0; partitions.max(1)], last: 0 }),
            busy: watch::Sender::new(false),
        })
    }

    /// Follows whether any task is outstanding.
    pub fn busy(&self) -> watch::Receiver<bool> {
        self.busy.subscribe()
    }

    /// Says whether any task is outstanding, after `state` changed.
    fn update_busy(&self, state: &State) {
        let busy = state.outstanding.iter().any(|&n| n > 0);
        self.busy.send_if_modified(|b| std::mem::replace(b, busy) != busy);
    }

    /// Waits for a free slot (first come, first served across jobs), on the
    /// least loaded partition; `left` is how many tasks the job has still
    /// to send, this one included.
    pub async fn acquire(self: &Arc<Self>, left: usize) -> Slot {
        let permit = Arc::clone(&self.permits).acquire_owned().await.expect("the semaphore is never closed");
        let mut state = self.state.lock().expect("lock");
        let sticky = left > state.outstanding.len() * (STICKY as usize + 1);
        let partition = state.take_least_loaded(&BTreeSet::new(), sticky);
        self.update_busy(&state);
        Slot { window: Arc::clone(self), partition, _permit: permit }
    }

    /// A slot for a task already on the broker at `partition` (a resumed
    /// job's), waiting like any other.
    pub async fn acquire_at(self: &Arc<Self>, partition: i32) -> Slot {
        let permit = Arc::clone(&self.permits).acquire_owned().await.expect("the semaphore is never closed");
        let mut state = self.state.lock().expect("lock");
        let partition = usize::try_from(partition).unwrap_or(0) % state.outstanding.len();
        state.outstanding[partition] += 1;
        self.update_busy(&state);
        Slot { window: Arc::clone(self), partition, _permit: permit }
    }

    /// Sizes the window for `workers` live workers (at least one, so a job
    /// submitted before any worker reports still has its first tasks ready).
    /// Shrinking takes effect as held slots are given back.
    pub fn resize(&self, workers: usize) {
        let target = workers.max(1) * self.per_worker;
        let mut state = self.state.lock().expect("lock");
        if target > state.size {
            self.permits.add_permits(target - state.size);
            state.size = target;
        } else if target < state.size {
            state.size -= self.permits.forget_permits(state.size - target);
        }
    }

    /// Slots in all, and slots held.
    pub fn usage(&self) -> (usize, usize) {
        let size = self.state.lock().expect("lock").size;
        (size, size.saturating_sub(self.permits.available_permits()))
    }

    /// Partitions of the tasks topic.
    pub fn partitions(&self) -> usize {
        self.state.lock().expect("lock").outstanding.len()
    }

    /// Outstanding tasks per partition.
    pub fn outstanding(&self) -> Vec<u32> {
        self.state.lock().expect("lock").outstanding.clone()
    }
}

impl State {
    /// The least loaded partition outside `avoid`, or of all if every one
    /// is in it; when `sticky`, the last one given while it is within
    /// `STICKY` of that.
    fn take_least_loaded(&mut self, avoid: &BTreeSet<usize>, sticky: bool) -> usize {
        let n = self.outstanding.len();
        // From the one after the last, so that ties rotate.
        let all = || (1..=n).map(|i| (self.last + i) % n);
        let least = |candidates: &mut dyn Iterator<Item = usize>| candidates.min_by_key(|&p| self.outstanding[p]);
        let least = least(&mut all().filter(|p| !avoid.contains(p))).or_else(|| least(&mut all())).unwrap_or(0);
        let sticks =
            sticky && !avoid.contains(&self.last) && self.outstanding[self.last] <= self.outstanding[least] + STICKY;
        let partition = if sticks { self.last } else { least };
        self.last = partition;
        self.outstanding[partition] += 1;
        partition
    }
}

impl Slot {
    pub fn partition(&self) -> i32 {
        self.partition as i32
    }

    /// Moves the slot to the least loaded other partition, for a task sent
    /// again: its last partition's worker failed it or lost it. Partitions
    /// in `avoid` (whose workers cannot run the job) are not chosen either,
    /// unless nothing else is left.
    pub fn move_away(&mut self, avoid: &BTreeSet<i32>) {
        let mut state = self.window.state.lock().expect("lock");
        state.outstanding[self.partition] -= 1;
        let mut avoid: BTreeSet<usize> = avoid.iter().filter_map(|&p| usize::try_from(p).ok()).collect();
        avoid.insert(self.partition);
        self.partition = state.take_least_loaded(&avoid, false);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.window.state.lock().expect("lock");
        state.outstanding[self.partition] -= 1;
        self.window.update_busy(&state);
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("partition", &self.partition).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tasks left to send for a job far from its end.
    const MANY: usize = 1000;

    fn now<T>(future: impl Future<Output = T>) -> Option<T> {
        futures::FutureExt::now_or_never(future)
    }

    #[tokio::test]
    async fn holds_per_worker_slots_for_each_live_worker() {
        let window = Window::new(12, 3);
        let held: Vec<Slot> = (0..3).map(|_| now(window.acquire(MANY)).expect("free")).collect();
        assert!(now(window.acquire(MANY)).is_none(), "one worker: three slots");
        window.resize(2);
        let more: Vec<Slot> = (0..3).map(|_| now(window.acquire(MANY)).expect("free")).collect();
        assert!(now(window.acquire(MANY)).is_none(), "two workers: six slots");
        assert_eq!(window.usage(), (6, 6));
        drop(more);
        window.resize(1);
        assert_eq!(window.usage(), (3, 3), "shrinks by the free slots");
        assert!(*window.busy().borrow());
        drop(held);
        assert!(!*window.busy().borrow(), "nothing outstanding");
        assert_eq!(window.usage(), (3, 0));
        assert_eq!(window.outstanding(), vec![0; 12], "every partition given back");
    }

    #[tokio::test]
    async fn shrinking_below_the_held_slots_waits_for_them() {
        let window = Window::new(4, 2);
        window.resize(2);
        let held: Vec<Slot> = (0..4).map(|_| now(window.acquire(MANY)).expect("free")).collect();
        window.resize(1);
        assert_eq!(window.usage(), (4, 4), "held slots are not taken away");
        drop(held);
        window.resize(1);
        assert_eq!(window.usage(), (2, 0));
        assert!(now(window.acquire(MANY)).is_some());
    }

    #[tokio::test]
    async fn spreads_over_the_least_loaded_partitions() {
        let window = Window::new(3, 30);
        let slots: Vec<Slot> = (0..15).map(|_| now(window.acquire(MANY)).unwrap()).collect();
        assert_eq!(window.outstanding(), vec![5, 5, 5]);
        // Partition 1's tasks finish first: it gets the next ones.
        let mut slots: Vec<Slot> = slots.into_iter().filter(|s| s.partition() != 1).collect();
        slots.push(now(window.acquire(MANY)).unwrap());
        assert_eq!(slots.last().unwrap().partition(), 1);
        assert_eq!(window.outstanding(), vec![5, 1, 5]);
    }

    #[tokio::test]
    async fn tasks_in_a_row_share_a_partition_within_a_few() {
        let window = Window::new(4, 40);
        let partitions: Vec<i32> = (0..12).map(|_| now(window.acquire(MANY)).unwrap().partition()).collect();
        // Each slot is given back at once: every partition is as loaded, so
        // the same one keeps being chosen.
        assert!(partitions.iter().all(|&p| p == partitions[0]), "{partitions:?}");
        let held: Vec<Slot> = (0..12).map(|_| now(window.acquire(MANY)).unwrap()).collect();
        let mut runs: Vec<(i32, usize)> = Vec::new();
        for slot in &held {
            match runs.last_mut() {
                Some((p, n)) if *p == slot.partition() => *n += 1,
                _ => runs.push((slot.partition(), 1)),
            }
        }
        let expected = STICKY as usize + 1;
        assert_eq!(runs.iter().map(|r| r.1).collect::<Vec<_>>(), vec![expected, expected, 12 - 2 * expected]);
        let outstanding = window.outstanding();
        assert!(outstanding.iter().max().unwrap() - outstanding.iter().min().unwrap() <= STICKY + 1, "{outstanding:?}");
    }

    #[tokio::test]
    async fn a_jobs_last_tasks_even_the_partitions_out() {
        let window = Window::new(2, 40);
        let _held: Vec<Slot> = (0..(STICKY as usize + 1)).map(|_| now(window.acquire(MANY)).unwrap()).collect();
        assert_eq!(window.outstanding(), vec![STICKY + 1, 0], "far from the end: in a row on one");
        let last: Vec<Slot> = (1..=4).rev().map(|left| now(window.acquire(left)).unwrap()).collect();
        assert!(last.iter().all(|s| s.partition() == 1), "the end: each to the least loaded");
        let outstanding = window.outstanding();
        assert!(outstanding[0].abs_diff(outstanding[1]) <= 1, "{outstanding:?}");
    }

    #[tokio::test]
    async fn a_task_sent_again_moves_to_another_partition() {
        let window = Window::new(3, 10);
        let mut slot = now(window.acquire(MANY)).unwrap();
        let first = slot.partition();
        slot.move_away(&BTreeSet::new());
        assert_ne!(slot.partition(), first);
        assert_eq!(window.outstanding().iter().sum::<u32>(), 1);
        // Away from partitions whose workers cannot run it, too.
        let avoid = BTreeSet::from([(slot.partition() + 1) % 3]);
        let before = slot.partition();
        slot.move_away(&avoid);
        assert!(slot.partition() != before && !avoid.contains(&slot.partition()), "{}", slot.partition());
        slot.move_away(&BTreeSet::from([0, 1, 2]));
        assert_eq!(window.outstanding().iter().sum::<u32>(), 1, "nowhere else left: still placed");
        let lonely = Window::new(1, 10);
        let mut slot = now(lonely.acquire(MANY)).unwrap();
        slot.move_away(&BTreeSet::new());
        assert_eq!((slot.partition(), lonely.outstanding()), (0, vec![1]), "one partition: it stays");
    }

    #[tokio::test]
    async fn resumed_tasks_count_where_they_are() {
        let window = Window::new(4, 10);
        let slot = now(window.acquire_at(2)).unwrap();
        assert_eq!((slot.partition(), window.outstanding()), (2, vec![0, 0, 1, 0]));
        let slot = now(window.acquire_at(9)).unwrap();
        assert_eq!(slot.partition(), 1, "a partition beyond the topic's wraps");
    }
}
