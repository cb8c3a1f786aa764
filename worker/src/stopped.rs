//! Jobs the master has stopped (cancelled or failed), read from the control
//! topic by every worker, so their remaining tiles are skipped, not processed.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use pipeline::wire::Control;
use plumbing::kafka::LoggedConsumer;
use rdkafka::consumer::Consumer;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Stopped jobs worth remembering: tasks of older ones are long consumed.
const REMEMBERED: usize = 10_000;

/// How long a starting worker reads old announcements before taking tasks.
const CATCH_UP: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Stopped(Mutex<(HashSet<String>, VecDeque<String>)>);

impl Stopped {
    pub fn contains(&self, job_id: &str) -> bool {
        self.0.lock().expect("lock").0.contains(job_id)
    }

    fn insert(&self, job_id: String) {
        let (set, order) = &mut *self.0.lock().expect("lock");
        if set.insert(job_id.clone()) {
            order.push_back(job_id);
            if order.len() > REMEMBERED {
                order.pop_front().map(|old| set.remove(&old));
            }
        }
    }

    /// Reads the control topic from its start until `shutdown`. Returns once
    /// the announcements made before this call are read (or after a bounded
    /// wait), and keeps following in the background.
    pub async fn follow(
        self: std::sync::Arc<Self>,
        consumer: LoggedConsumer,
        topic: String,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let mut partitions = TopicPartitionList::new();
        let assigned =
            partitions.add_partition_offset(&topic, 0, Offset::Beginning).and_then(|()| consumer.assign(&partitions));
        if let Err(e) = assigned {
            warn!(error = %e, "following the control topic");
        }
        let consumer = std::sync::Arc::new(consumer);
        let end = {
            let (c, t) = (std::sync::Arc::clone(&consumer), topic.clone());
            // No topic yet (no master has run): nothing to catch up on.
            tokio::task::spawn_blocking(move || c.fetch_watermarks(&t, 0, Duration::from_secs(5)).map_or(0, |w| w.1))
                .await
                .unwrap_or(0)
        };
        let (caught_up_tx, caught_up) = tokio::sync::oneshot::channel();
        let handle = tokio::spawn(async move {
            let mut caught_up_tx = Some(caught_up_tx);
            if end == 0 {
                caught_up_tx.take().map(|tx| tx.send(()));
            }
            loop {
                let message = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    m = consumer.recv() => m,
                };
                match message {
                    Ok(m) => {
                        match Control::decode(m.payload().unwrap_or_default()) {
                            Ok(Control::JobStopped { job_id }) => {
                                debug!(job = %job_id, "job stopped; skipping its tiles");
                                self.insert(job_id);
                            }
                            Err(e) => warn!(error = %e, "skipping a malformed control message"),
                        }
                        if m.offset() + 1 >= end {
                            caught_up_tx.take().map(|tx| tx.send(()));
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, "control topic");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            tokio::task::spawn_blocking(move || drop(consumer));
        });
        if tokio::time::timeout(CATCH_UP, caught_up).await.is_err() {
            warn!("could not read the control topic in time; stopped jobs may be processed");
        }
        handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_bounded_number_of_jobs() {
        let stopped = Stopped::default();
        for i in 0..REMEMBERED + 5 {
            stopped.insert(format!("job-{i}"));
        }
        stopped.insert("job-9".into()); // already known: no double entry
        assert!(!stopped.contains("job-0") && !stopped.contains("job-4"));
        assert!(stopped.contains("job-5") && stopped.contains(&format!("job-{}", REMEMBERED + 4)));
        assert_eq!(stopped.0.lock().unwrap().1.len(), REMEMBERED);
    }
}
