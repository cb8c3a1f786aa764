//! Admission of uploads. The backlog check and the job's insertion are far
//! apart (the image is decoded between them), so uploads that passed the
//! check but are not recorded yet are counted here: concurrent uploads
//! cannot all slip under the limit. The memory a job will need is reserved
//! from the master's budget in the same step, and held until the job stops.
//! Decodes run a few at a time, off the async threads.

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use crate::error::{AppError, AppResult, ErrorCode};
use crate::store::Store;

/// How much work the server takes on.
#[derive(Debug, Clone, Copy)]
pub struct Backlog {
    pub max_active_jobs: u64,
    pub max_queued_tiles: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Pending {
    jobs: u64,
    tiles: u64,
}

pub struct Admission {
    /// Serialises the check, so that two uploads never both see the last slot free.
    gate: tokio::sync::Mutex<()>,
    pending: Arc<Mutex<Pending>>,
    decoders: Semaphore,
    /// The memory budget, one permit per MiB.
    memory: Arc<Semaphore>,
    budget_mib: u32,
}

/// Memory reserved for a job from the budget, given back when dropped.
pub type Reservation = OwnedSemaphorePermit;

/// An admitted upload not yet recorded as a job; counted until dropped.
pub struct Ticket {
    pending: Arc<Mutex<Pending>>,
    tiles: u64,
    memory: Option<Reservation>,
}

impl Ticket {
    /// The job's memory, to hold for its life.
    pub fn reservation(&mut self) -> Option<Reservation> {
        self.memory.take()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut p = self.pending.lock().expect("lock");
        p.jobs -= 1;
        p.tiles -= self.tiles;
    }
}

impl Admission {
    /// Admission with a memory budget of `budget_bytes`.
    pub fn new(budget_bytes: u64) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let budget_mib = mib(budget_bytes).min(Semaphore::MAX_PERMITS as u64) as u32;
        Self {
            gate: tokio::sync::Mutex::default(),
            pending: Arc::default(),
            decoders: Semaphore::new(cores),
            memory: Arc::new(Semaphore::new(budget_mib as usize)),
            budget_mib,
        }
    }

    /// Admits an upload of `tiles` tiles needing `memory` bytes of the
    /// budget, or refuses it: 503 while the backlog (recorded jobs plus
    /// admitted uploads) is full or the budget is spent by other jobs, 413
    /// if the budget could never hold it.
    pub async fn admit(&self, store: &Store, backlog: Backlog, tiles: u64, memory: u64) -> AppResult<Ticket> {
        let needed = mib(memory);
        if needed > u64::from(self.budget_mib) {
            let message = format!(
                "processing this image would need about {} MiB of the server's memory, more than its budget of {} MiB \
                 (TILEPIPE_MEMORY_BUDGET); a baseline JPEG of the same size needs far less",
                needed, self.budget_mib
            );
            return Err(AppError::client(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::ImageTooLarge, message));
        }
        let _gate = self.gate.lock().await;
        let (active_jobs, queued_tiles) = store.backlog().await?;
        let mut pending = self.pending.lock().expect("lock");
        let (jobs, queued) = (active_jobs + pending.jobs, queued_tiles + pending.tiles);
        if jobs >= backlog.max_active_jobs || queued + tiles > backlog.max_queued_tiles {
            return Err(AppError::Busy {
                retry_after_secs: 10,
                message: format!("the server is busy ({jobs} jobs and {queued} tiles waiting); try again shortly"),
            });
        }
        let reservation = Arc::clone(&self.memory).try_acquire_many_owned(needed as u32).map_err(|_| {
            let free = self.memory.available_permits();
            AppError::Busy {
                retry_after_secs: 10,
                message: format!(
                    "the server's memory is taken by other jobs ({free} of {} MiB free, this image needs {needed}); \
                     try again shortly",
                    self.budget_mib
                ),
            }
        })?;
        pending.jobs += 1;
        pending.tiles += tiles;
        Ok(Ticket { pending: Arc::clone(&self.pending), tiles, memory: Some(reservation) })
    }

    /// Reserves `memory` bytes of the budget (at most all of it) for a job
    /// resumed after a restart, waiting until other jobs give enough back:
    /// resumed jobs start in turn rather than all at once.
    pub async fn reserve(&self, memory: u64) -> Reservation {
        Arc::clone(&self.memory).acquire_many_owned(self.clamped(memory)).await.expect("the budget is never closed")
    }

    /// Reserves `memory` bytes for work on a stored file (a preview, a
    /// pyramid), waiting like [`Admission::reserve`]; 413 with `refusal` if
    /// the whole budget could never hold it.
    pub async fn reserve_or_refuse(&self, memory: u64, refusal: &'static str) -> AppResult<Reservation> {
        if !self.could_hold(memory) {
            return Err(AppError::client(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::ImageTooLarge, refusal));
        }
        Ok(self.reserve(memory).await)
    }

    /// The same, only if it is free now.
    pub fn try_reserve(&self, memory: u64) -> Option<Reservation> {
        Arc::clone(&self.memory).try_acquire_many_owned(self.clamped(memory)).ok()
    }

    fn clamped(&self, memory: u64) -> u32 {
        mib(memory).min(u64::from(self.budget_mib)) as u32
    }

    /// Whether the whole budget could hold `memory` bytes.
    pub fn could_hold(&self, memory: u64) -> bool {
        mib(memory) <= u64::from(self.budget_mib)
    }

    /// MiB of the budget not reserved.
    pub fn memory_free_mib(&self) -> usize {
        self.memory.available_permits()
    }

    /// A turn to decode an image: as many at once as there are cores.
    pub async fn decoder(&self) -> SemaphorePermit<'_> {
        self.decoders.acquire().await.expect("the semaphore is never closed")
    }
}

/// Gives back what `reservation` holds beyond `keep` bytes (in whole MiB):
/// a job whose decoded image has been let go.
pub fn shrink(reservation: &mut Reservation, keep: u64) {
    let (held, keep) = (reservation.num_permits(), mib(keep) as usize);
    if held > keep {
        drop(reservation.split(held - keep));
    }
}

/// Bytes in whole MiB, rounded up.
fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}
