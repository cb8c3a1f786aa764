//! Jobs a previous run of the server left unfinished: their shares of the
//! memory budget reserved, then carried on from their stored inputs.

use std::sync::Arc;

use anyhow::Context;
use pipeline::ops;
use tracing::{info, warn};

use super::{Jobs, Start};
use crate::admission::{Admission, Reservation};
use crate::intake;

/// A resumed job's share of the memory budget.
pub enum Share {
    Held(Reservation),
    /// Not free yet: this many bytes, to wait for.
    Wait(u64),
    /// Its input could not be read: the job will fail as it starts.
    Unknown,
}

impl Jobs {
    /// The jobs a previous run left unfinished, each holding its share of
    /// the memory budget if that is free: reserved before the server takes
    /// uploads, so that none takes it first.
    pub async fn unfinished(&self, admission: &Admission) -> Vec<(String, Share)> {
        let ids = match self.store.unfinished_jobs().await {
            Ok(ids) => ids,
            Err(e) => {
                warn!(error = %e, "listing unfinished jobs");
                return Vec::new();
            }
        };
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            let share = match self.resume_estimate(&id).await {
                Ok(memory) => admission.try_reserve(memory).map_or(Share::Wait(memory), Share::Held),
                Err(e) => {
                    warn!(job = %id, error = %e, "cannot estimate a resumed job's memory");
                    Share::Unknown
                }
            };
            jobs.push((id, share));
        }
        jobs
    }

    /// Carries on `unfinished` jobs side by side, as new uploads' jobs run,
    /// those still waiting for their share of the memory budget once it is
    /// free (in turn).
    pub async fn resume(self: Arc<Self>, unfinished: Vec<(String, Share)>, admission: Arc<Admission>) {
        for (id, share) in unfinished {
            info!(job = %id, "resuming job");
            let memory = match share {
                Share::Held(reservation) => Some(reservation),
                Share::Wait(memory) => Some(admission.reserve(memory).await),
                Share::Unknown => None,
            };
            let this = Arc::clone(&self);
            tokio::spawn(async move { this.run(&id, Start::Resumed { memory }).await });
        }
    }

    /// What a stored job needs of the memory budget, from its input's header.
    pub(super) async fn resume_estimate(&self, id: &str) -> anyhow::Result<u64> {
        let job = self.store.job(id).await?.context("the job was deleted")?;
        let path = self.input_path(id).await.context("the job's input file is gone")?;
        let (info, plan) = tokio::task::spawn_blocking(move || intake::inspect_stored(&path)).await??;
        let halo = ops::chain_halo(&job.ops);
        Ok(intake::memory_needed(&info, &plan, job.tile_size, halo, job.output))
    }
}
