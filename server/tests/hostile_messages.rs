//! Hostile messages on the broker: forged heartbeats, stale failure reports
//! and results that do not fit their job change nothing they should not,
//! and the master carries on.

use std::time::Duration;

use app::api::{Event, JobStatus, Worker};
use pipeline::codec::Encoding;
use pipeline::geometry::Rect;
use pipeline::wire::{Heartbeat, ResultHeader, TileFailure, TileResult, Topics};
use pipeline::{Frame, Operation};
use testkit::*;

const DEADLINE: Duration = Duration::from_secs(60);

fn heartbeat(worker_id: &str) -> Vec<u8> {
    let beat = Heartbeat {
        worker_id: worker_id.into(),
        host: "nowhere".into(),
        pid: 1,
        current_tile: None,
        tiles_done: 0,
        sent_at_ms: 0,
        cpu_percent: None,
        rss_bytes: None,
        runtime: None,
    };
    beat.encode()
}

async fn workers(server: &TestServer) -> Vec<Worker> {
    reqwest::get(server.url("/api/workers")).await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_heartbeats_are_bounded_and_forgotten_after_the_retention_period() {
    let broker = Broker::start();
    let prefix = unique_prefix("forged-heartbeats");
    let server = TestServer::start_with(&broker, &prefix, |c| {
        c.worker_timeout_secs = 1;
        c.worker_retention_secs = 2;
    })
    .await;
    let events = record_events(&server, |e| matches!(e, Event::WorkerGone(_))).await;
    let (producer, topics) = (producer(&broker), Topics::new(&prefix));
    let huge = "w".repeat(1 << 20);
    // Sent until seen: the master reads only heartbeats sent after it joined.
    eventually("the forged worker to be listed", DEADLINE, || async {
        send(&producer, &topics.heartbeats, &heartbeat(&huge)).await;
        send(&producer, &topics.heartbeats, &heartbeat("forged-1")).await;
        workers(&server).await.iter().any(|w| w.id == "forged-1").then_some(())
    })
    .await;
    assert!(workers(&server).await.iter().all(|w| w.id.len() < 200), "a megabyte-long worker id was kept");

    eventually("the forged worker to be forgotten", DEADLINE, || async {
        workers(&server).await.is_empty().then_some(())
    })
    .await;
    let seen = tokio::time::timeout(DEADLINE, events).await.unwrap().unwrap();
    assert!(seen.contains(&Event::WorkerGone("forged-1".into())), "{seen:?}");
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("forged-1"), "a forgotten worker is still in the metrics");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_failure_reports_and_ill_fitting_results_change_nothing() {
    let broker = Broker::start();
    let prefix = unique_prefix("stale-replies");
    // One attempt per tile: any failure that counted would fail the job.
    let server = TestServer::start_with(&broker, &prefix, |c| c.max_attempts = 1).await;
    let api = server.api();
    let image = test_image(1024, 1024);
    let job = api.submit(&image, &[Operation::Invert]).await;
    eventually("every tile to be sent once", DEADLINE, || async {
        api.tiles(&job.id).await.iter().all(|t| t.attempts == 1).then_some(())
    })
    .await;

    let (producer, topics) = (producer(&broker), Topics::new(&prefix));
    let failure = |tile, attempt| TileFailure {
        job_id: job.id.clone(),
        tile,
        worker_id: "late".into(),
        error: "old news".into(),
        attempt,
        unsupported: None,
    };
    // A report about an earlier sending of tile 0, and about tiles that do not exist.
    for stale in [failure(0, 7), failure(999, 1), TileFailure { job_id: "ghost".into(), ..failure(0, 1) }] {
        send(&producer, &topics.results, &stale.encode()).await;
    }
    let result = |rect: Rect, pixels: Frame| TileResult {
        header: ResultHeader {
            job_id: job.id.clone(),
            tile: 1,
            rect,
            worker_id: "forger".into(),
            elapsed_ms: 1.0,
            channels: pixels.channels,
            encoding: Encoding::Png,
        },
        output: pixels,
    };
    // The wrong place for tile 1, and the right place with a black tile of another size's PNG.
    send(&producer, &topics.results, &result(Rect::new(0, 0, 512, 512), Frame::black(512, 512)).encode()).await;
    let mislabelled = result(Rect::new(512, 0, 512, 512), Frame::black(512, 511));
    send(&producer, &topics.results, &mislabelled.encode()).await;
    // A result claiming a tile of ten billion pixels, for a job nobody knows.
    let header = r#"{"job_id":"ghost","tile":0,"rect":{"x":0,"y":0,"width":100000,"height":100000},"worker_id":"w","elapsed_ms":1,"encoding":"png"}"#;
    let mut claim = b"TPR1".to_vec();
    claim.extend_from_slice(&(header.len() as u32).to_le_bytes());
    claim.extend_from_slice(header.as_bytes());
    claim.extend_from_slice(&testkit::png(&Frame::black(64, 64)));
    send(&producer, &topics.results, &claim).await;

    let worker = TestWorker::start(&broker, &prefix, "honest");
    let done = api.finished(&job.id, DEADLINE).await;
    assert_eq!(done.status, JobStatus::Done, "{:?}", done.error);
    api.assert_exact(&done, &image, &[Operation::Invert]).await;
    let tiles = api.tiles(&job.id).await;
    assert!(tiles.iter().all(|t| t.attempts == 1 && t.worker_id.as_deref() == Some("honest")), "{tiles:?}");
    worker.stop().await;
    server.stop().await;
}
