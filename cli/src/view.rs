//! Tables of jobs and workers for the terminal, and `tilepipe watch`, which
//! redraws them as the event stream reports changes.

use std::collections::BTreeMap;
use std::time::Duration;

use app::api::{Event, Job, Worker, WorkerStatus};
use futures::StreamExt;

use crate::client::Client;

pub fn jobs_table(jobs: &[Job]) -> String {
    let mut out = format!("{:<10} {:<9} {:>11} {:>11}  {}\n", "JOB", "STATUS", "TILES", "SIZE", "FILE");
    for job in jobs {
        out.push_str(&format!(
            "{:<10} {:<9} {:>11} {:>11}  {}{}\n",
            job.id.chars().take(8).collect::<String>(),
            job.status.as_str(),
            format!("{}/{}", job.tiles_done, job.tiles_total),
            format!("{}x{}", job.width, job.height),
            job.filename,
            job.error.as_deref().map(|e| format!("  ({e})")).unwrap_or_default(),
        ));
    }
    out
}

pub fn workers_table(workers: &[Worker]) -> String {
    let mut out =
        format!("{:<24} {:<6} {:>8} {:>6} {:>8}  {}\n", "WORKER", "STATUS", "TILES", "CPU", "MEMORY", "RUNTIME");
    for w in workers {
        out.push_str(&format!(
            "{:<24} {:<6} {:>8} {:>6} {:>8}  {}\n",
            w.id,
            if w.status == WorkerStatus::Alive { "alive" } else { "lost" },
            w.tiles_done,
            w.cpu_percent.map(|c| format!("{c:.0}%")).unwrap_or_else(|| "-".into()),
            w.rss_bytes.map(|b| format!("{} MB", b / 1_000_000)).unwrap_or_else(|| "-".into()),
            w.runtime.as_deref().unwrap_or("-"),
        ));
    }
    out
}

/// Redraws workers and the newest jobs on every change, at most four times
/// a second, until Ctrl-C or the server goes away.
pub async fn watch(client: &Client) -> anyhow::Result<()> {
    let mut jobs: BTreeMap<String, Job> = client.jobs().await?.into_iter().map(|j| (j.id.clone(), j)).collect();
    let mut workers: BTreeMap<String, Worker> =
        client.workers().await?.into_iter().map(|w| (w.id.clone(), w)).collect();
    let mut events = Box::pin(client.events().await?);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut dirty = true;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            event = events.next() => match event {
                Some(Event::Job(job)) => { jobs.insert(job.id.clone(), job); dirty = true; }
                Some(Event::JobDeleted(id)) => { jobs.remove(&id); dirty = true; }
                Some(Event::Worker(worker)) => { workers.insert(worker.id.clone(), worker); dirty = true; }
                Some(Event::WorkerGone(id)) => { workers.remove(&id); dirty = true; }
                Some(Event::Tile(tile)) => {
                    if let Some(job) = jobs.get_mut(&tile.job_id) {
                        job.tiles_done = (job.tiles_done + 1).min(job.tiles_total);
                        dirty = true;
                    }
                }
                Some(Event::TileFailed(_)) => {}
                None => anyhow::bail!("the server closed the event stream"),
            },
            _ = tick.tick(), if dirty => {
                dirty = false;
                let mut newest: Vec<Job> = jobs.values().cloned().collect();
                newest.sort_by_key(|j| std::cmp::Reverse(j.created_at));
                newest.truncate(20);
                let workers: Vec<Worker> = workers.values().cloned().collect();
                // Clear the screen and draw from the top.
                print!("\x1b[2J\x1b[H{}\n{}", workers_table(&workers), jobs_table(&newest));
            }
        }
    }
}
