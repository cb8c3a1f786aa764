//! Test harness: a real nisshi broker per test, a real server on a free port
//! with its own SQLite file, and real workers, all on loopback. By module:
//! `processes` (the broker, and the binaries as processes), `harness` (a
//! server and workers in the test's process), `api` (a client of the JSON
//! API and the event stream), `kafka` (fake workers, producing, reading
//! topics) and `images` (test images, hostile PNGs); all re-exported here.

use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, failing the test after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub use conformance::broker::{free_port, wait_for_port};
/// A topic prefix no other test uses.
pub fn unique_prefix(test: &str) -> String {
    format!("t-{test}-{}-", uuid::Uuid::new_v4().simple())
}

mod api;
mod harness;
mod images;
mod kafka;
mod processes;

pub use api::*;
pub use harness::*;
pub use images::*;
pub use kafka::*;
pub use processes::*;
