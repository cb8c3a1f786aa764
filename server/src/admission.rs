//! Admission of uploads. The backlog check and the job's insertion are far
//! apart (the image is decoded between them), so uploads that passed the
//! check but are not recorded yet are counted here: concurrent uploads
//! cannot all slip under the limit. Decodes run a few at a time, off the
//! async threads.

use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::{AppError, AppResult};
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
}

impl Default for Admission {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self { gate: tokio::sync::Mutex::default(), pending: Arc::default(), decoders: Semaphore::new(cores) }
    }
}

/// An admitted upload not yet recorded as a job; counted until dropped.
pub struct Ticket {
    pending: Arc<Mutex<Pending>>,
    tiles: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut p = self.pending.lock().expect("lock");
        p.jobs -= 1;
        p.tiles -= self.tiles;
    }
}

impl Admission {
    /// Admits an upload of `tiles` tiles, or refuses it with 503 while the
    /// backlog (recorded jobs plus admitted uploads) is full.
    pub async fn admit(&self, store: &Store, backlog: Backlog, tiles: u64) -> AppResult<Ticket> {
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
        pending.jobs += 1;
        pending.tiles += tiles;
        Ok(Ticket { pending: Arc::clone(&self.pending), tiles })
    }

    /// A turn to decode an image: as many at once as there are cores.
    pub async fn decoder(&self) -> SemaphorePermit<'_> {
        self.decoders.acquire().await.expect("the semaphore is never closed")
    }
}
