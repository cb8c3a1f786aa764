//! A worker may implement only some operations (docs/protocol.md, section
//! 6): it declines a task with `unsupported`, and the master sends the tile
//! to another partition's worker without spending an attempt, or fails the
//! job at once when no partition's worker can run it.

use std::time::Duration;

use app::api::JobStatus;
use pipeline::Operation;
use pipeline::wire::{TileFailure, Topics};
use testkit::*;

const DEADLINE: Duration = Duration::from_secs(60);

/// A worker that implements none of the operations.
fn declining(broker: &Broker, prefix: &str) -> FakeWorker {
    FakeWorker::start(broker, prefix, |task| {
        let h = task.header;
        let op = h.ops[0].name().to_owned();
        let error = format!("this worker does not implement {op}");
        let failure = TileFailure {
            job_id: h.job_id,
            tile: h.tile,
            worker_id: "declining".into(),
            error,
            attempt: h.attempt,
            unsupported: Some(op),
        };
        Some(failure.encode())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_a_worker_declines_go_to_one_that_can_run_them() {
    let broker = Broker::start();
    let prefix = unique_prefix("partial");
    // One attempt per tile: a decline that spent one would fail the job.
    let server = TestServer::start_with(&broker, &prefix, |c| {
        c.tile_size = 256;
        c.max_attempts = 1;
    })
    .await;
    let partial = declining(&broker, &prefix);
    let rust = TestWorker::start(&broker, &prefix, "rust-worker");
    let group = Topics::new(&prefix).workers_group;
    eventually("both workers to be in the group", DEADLINE, || async {
        (stable_group_members(&broker, group.clone()).await == 2).then_some(())
    })
    .await;

    let (image, ops) = (test_image(1024, 1024), [Operation::GaussianBlur { kernel: 9, sigma: None }]);
    let api = server.api();
    let job = api.submit(&image, &ops).await;
    let job = api.finished(&job.id, DEADLINE).await;
    api.assert_exact(&job, &image, &ops).await;
    let tiles = api.tiles(&job.id).await;
    assert!(tiles.iter().all(|t| t.worker_id.as_deref() == Some("rust-worker")));
    let declined = partial.seen.load(std::sync::atomic::Ordering::SeqCst);
    assert!(declined > 0, "the declining worker was sent no task: the test proves nothing");
    // Its partitions were learnt: far fewer declines than tiles.
    assert!(declined < 16, "{declined} declines for 16 tiles");
    partial.stop().await;
    rust.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_no_worker_can_run_fails_with_the_reason() {
    let broker = Broker::start();
    let prefix = unique_prefix("unsupported");
    let server = TestServer::start(&broker, &prefix).await;
    let partial = declining(&broker, &prefix);
    let api = server.api();
    let job = api.submit(&test_image(1024, 1024), &[Operation::EdgeDetect]).await;
    let job = api.finished(&job.id, DEADLINE).await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap_or_default();
    assert!(error.contains("do not support edge_detect"), "{error}");
    partial.stop().await;
    server.stop().await;
}
