//! Workers as real processes, killed and stopped mid-job: no tile is lost,
//! the result is exact, and a worker survives any task it is sent.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use pipeline::Operation;
use pipeline::wire::{Reply, Topics};
use rdkafka::Message;
use testkit::*;

const WORKER: &str = env!("CARGO_BIN_EXE_worker");
const DEADLINE: Duration = Duration::from_secs(120);

/// A job of many small tiles, so that it is still running when a worker goes.
async fn start_many_tile_job(broker: &Broker, prefix: &str) -> (TestServer, pipeline::Frame, app::api::Job) {
    let server = TestServer::start_with(broker, prefix, |c| c.tile_size = 128).await;
    let image = test_image(2048, 2048);
    let job = server.api().submit(&image, &[Operation::default()]).await;
    assert_eq!(job.tiles_total, 256);
    (server, image, job)
}

fn workers_of(tiles: &[app::api::Tile]) -> HashSet<String> {
    tiles.iter().filter_map(|t| t.worker_id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_job_loses_no_tile() {
    let broker = Broker::start();
    let prefix = unique_prefix("kill-worker");
    let (server, image, job) = start_many_tile_job(&broker, &prefix).await;
    let api = server.api();

    let mut doomed = worker_process(Path::new(WORKER), &broker, &prefix, "doomed");
    let before = api.progressed(&job.id, 3, DEADLINE).await;
    doomed.kill();
    assert!(before.tiles_done < before.tiles_total, "the job finished before the worker could be killed");

    // The survivor joins; the group gives it the dead worker's tiles once
    // the dead one's session times out.
    let survivor = TestWorker::start(&broker, &prefix, "survivor");
    let done = api.finished(&job.id, DEADLINE).await;
    api.assert_exact(&done, &image, &[Operation::default()]).await;
    let by = workers_of(&api.tiles(&job.id).await);
    assert_eq!(by, HashSet::from(["doomed".to_owned(), "survivor".to_owned()]));
    survivor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_stops_a_worker_cleanly_and_its_tiles_move_on() {
    let broker = Broker::start();
    let prefix = unique_prefix("term-worker");
    let (server, image, job) = start_many_tile_job(&broker, &prefix).await;
    let api = server.api();

    let mut leaving = worker_process(Path::new(WORKER), &broker, &prefix, "leaving");
    api.progressed(&job.id, 3, DEADLINE).await;
    let status = leaving.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "worker exited with {status}");
    let before = api.job(&job.id).await;
    assert!(before.tiles_done < before.tiles_total, "the job finished before the worker was stopped");

    let staying = TestWorker::start(&broker, &prefix, "staying");
    let done = api.finished(&job.id, DEADLINE).await;
    api.assert_exact(&done, &image, &[Operation::default()]).await;
    assert!(workers_of(&api.tiles(&job.id).await).contains("staying"));
    staying.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_tasks_are_reported_or_parked_and_the_worker_carries_on() {
    let broker = Broker::start();
    let prefix = unique_prefix("poison-worker");
    let server = TestServer::start(&broker, &prefix).await;
    let topics = Topics::new(&prefix);
    let mut worker = worker_process(Path::new(WORKER), &broker, &prefix, "sturdy");

    // Garbage, and a task for a job nobody knows whose pixels are cut short.
    let producer = producer(&broker);
    send(&producer, &topics.tasks, b"not a task at all").await;
    let header = br#"{"job_id":"ghost","tile":3,"rect":{"x":0,"y":0,"width":4,"height":4},"halo":0,"ops":[]}"#;
    let mut short = b"TPT1".to_vec();
    short.extend_from_slice(&(header.len() as u32).to_le_bytes());
    short.extend_from_slice(header);
    short.extend_from_slice(&[0; 5]);
    send(&producer, &topics.tasks, &short).await;
    // A rect whose width plus twice the halo wraps around u32 (to 2x3 pixels,
    // which 18 bytes match): this once aborted every worker that took it.
    let header = format!(
        r#"{{"job_id":"wraps","tile":5,"rect":{{"x":0,"y":0,"width":{},"height":{}}},"halo":24,"ops":[{{"op":"gaussian_blur","kernel":49}}]}}"#,
        u32::MAX - 45,
        u32::MAX - 44
    );
    let mut wraps = b"TPT1".to_vec();
    wraps.extend_from_slice(&(header.len() as u32).to_le_bytes());
    wraps.extend_from_slice(header.as_bytes());
    wraps.extend_from_slice(&[0; 18]);
    send(&producer, &topics.tasks, &wraps).await;

    // The worker still does real work.
    let image = test_image(1024, 1024);
    let api = server.api();
    let job = api.submit(&image, &[Operation::Invert]).await;
    let done = api.finished(&job.id, DEADLINE).await;
    api.assert_exact(&done, &image, &[Operation::Invert]).await;
    assert!(worker.is_running(), "the worker died");

    let parked = read_topic(&broker, &topics.dead_letters, DEADLINE, |m| !m.is_empty()).await;
    assert_eq!(parked[0].payload(), Some(&b"not a task at all"[..]));
    let failures = |seen: &[rdkafka::message::OwnedMessage]| -> Vec<_> {
        seen.iter()
            .filter_map(|m| match Reply::decode(m.payload().unwrap()) {
                Ok(Reply::Failed(f)) => Some(f),
                _ => None,
            })
            .collect()
    };
    let replies = read_topic(&broker, &topics.results, DEADLINE, |seen| failures(seen).len() >= 2).await;
    let mut reported = failures(&replies);
    reported.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    assert_eq!(reported.len(), 2, "{reported:?}");
    for (failure, (job, tile)) in reported.iter().zip([("ghost", 3), ("wraps", 5)]) {
        assert_eq!((failure.job_id.as_str(), failure.tile, failure.worker_id.as_str()), (job, tile, "sturdy"));
        assert!(failure.error.contains("malformed task"), "{}", failure.error);
    }
}

#[test]
fn kafka_settings_from_the_environment_reach_the_client() {
    // A setting librdkafka refuses proves the variable got through.
    let output = std::process::Command::new(WORKER)
        .env("TILEPIPE_BROKERS", "127.0.0.1:1")
        .env("TILEPIPE_KAFKA_SECURITY_PROTOCOL", "carrier_pigeon")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("security.protocol"), "{stderr}");
}
