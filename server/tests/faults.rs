//! The master and the broker crash or misbehave mid-job; workers fail tiles
//! or swallow them. Every job still ends exactly right, or fails with a reason.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use app::api::{Event, JobStatus};
use pipeline::Operation;
use pipeline::wire::Topics;
use rdkafka::Message;
use rdkafka::message::Headers;
use testkit::*;

const SERVER: &str = env!("CARGO_BIN_EXE_server");
const DEADLINE: Duration = Duration::from_secs(120);

/// A master in a process of its own (128 px tiles), two workers, and a job
/// whose master is killed once a few of its tiles are done.
struct KilledMidJob {
    broker: Broker,
    prefix: String,
    data: tempfile::TempDir,
    workers: Vec<TestWorker>,
    image: pipeline::Frame,
    job: app::api::Job,
    /// The tiles done before the kill.
    before: HashMap<u32, app::api::Tile>,
}

impl KilledMidJob {
    fn env() -> [(&'static str, String); 1] {
        [("TILEPIPE_TILE_SIZE", "128".to_owned())]
    }

    async fn start(name: &str) -> Self {
        let broker = Broker::start();
        let prefix = unique_prefix(name);
        let data = tempfile::tempdir().unwrap();
        let (mut master, api) = server_process(Path::new(SERVER), &broker, &prefix, data.path(), &Self::env());
        let workers = ["1", "2"].map(|n| TestWorker::start(&broker, &prefix, &format!("{name}-{n}"))).into();

        let image = test_image(2048, 2048);
        let job = api.submit(&image, &[Operation::default()]).await;
        api.progressed(&job.id, 3, DEADLINE).await;
        let before: HashMap<u32, _> =
            api.tiles(&job.id).await.into_iter().filter(|t| t.done_at.is_some()).map(|t| (t.idx, t)).collect();
        master.kill();
        assert!(before.len() < 256, "the job finished before the master could be killed");
        Self { broker, prefix, data, workers, image, job, before }
    }

    /// The master started again on the same data; waits for the job.
    async fn restart(&self) -> (Process, Api, app::api::Job) {
        let (master, api) =
            server_process(Path::new(SERVER), &self.broker, &self.prefix, self.data.path(), &Self::env());
        let done = api.finished(&self.job.id, DEADLINE).await;
        api.assert_exact(&done, &self.image, &[Operation::default()]).await;
        (master, api, done)
    }

    async fn stop_workers(&mut self) {
        for w in self.workers.drain(..) {
            w.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_killed_mid_job_resumes_from_its_files() {
    let mut killed = KilledMidJob::start("kill-master").await;
    let (_master, api, done) = killed.restart().await;
    let first_task = done.stages.as_ref().and_then(|s| s.first_task_ms);
    assert_eq!(first_task, None, "a resumed job's first task is not timed from an upload");
    // Tiles done before the crash were kept, not done again.
    for tile in api.tiles(&done.id).await {
        if let Some(earlier) = killed.before.get(&tile.idx) {
            assert_eq!((&tile.worker_id, tile.done_at), (&earlier.worker_id, earlier.done_at), "tile {}", tile.idx);
        }
    }
    killed.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn done_tiles_lost_in_a_crash_are_processed_again() {
    let mut killed = KilledMidJob::start("lost-tiles").await;
    // The disk lost what the crash had not written: the first tile's record
    // is cut short, those after it are gone. Results stored after the restart
    // follow the cut record.
    let done_tiles = killed.data.path().join("jobs").join(&killed.job.id).join("tiles").join("done");
    std::fs::File::options().write(true).open(&done_tiles).unwrap().set_len(30).unwrap();

    let (_master, api, done) = killed.restart().await;
    for tile in api.tiles(&done.id).await {
        if let Some(earlier) = killed.before.get(&tile.idx) {
            assert!(tile.done_at > earlier.done_at, "tile {} was processed again", tile.idx);
        }
    }
    killed.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_restart_mid_job_is_survived() {
    let mut broker = Broker::start();
    let prefix = unique_prefix("restart-broker");
    let server = TestServer::start_with(&broker, &prefix, |c| c.tile_size = 128).await;
    let workers = [TestWorker::start(&broker, &prefix, "b-1"), TestWorker::start(&broker, &prefix, "b-2")];
    let api = server.api();

    let image = test_image(2048, 2048);
    let job = api.submit(&image, &[Operation::default()]).await;
    let before = api.progressed(&job.id, 3, DEADLINE).await;
    broker.restart();
    assert!(before.tiles_done < before.tiles_total, "the job finished before the broker restarted");

    let done = api.finished(&job.id, DEADLINE).await;
    api.assert_exact(&done, &image, &[Operation::default()]).await;
    for w in workers {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tile_that_always_fails_is_dead_lettered_and_fails_only_its_job() {
    let broker = Broker::start();
    let prefix = unique_prefix("poison");
    let server = TestServer::start_with(&broker, &prefix, |c| c.max_attempts = 2).await;
    let api = server.api();
    // A worker on which inverting always fails; every other chain works.
    let faulty = FakeWorker::start(&broker, &prefix, |task| {
        let poisoned = task.header.ops == [Operation::Invert];
        Some(answer(task, "faulty", poisoned.then_some("no ink")))
    });

    let events = record_events(&server, |e| matches!(e, Event::Job(j) if j.status == JobStatus::Failed)).await;
    let image = test_image(1024, 1024);
    let poisoned = api.submit(&image, &[Operation::Invert]).await;
    let healthy = api.submit(&image, &[Operation::Grayscale]).await;

    let failed = api.finished(&poisoned.id, DEADLINE).await;
    assert_eq!(failed.status, JobStatus::Failed);
    let reason = failed.error.unwrap();
    assert!(reason.contains("failed 2 times") && reason.contains("no ink"), "{reason}");
    // Each failure was told live, with the worker's words, for the task stream.
    let events = tokio::time::timeout(DEADLINE, events).await.unwrap().unwrap();
    let failures: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::TileFailed(f) => Some(f),
            _ => None,
        })
        .collect();
    assert!(!failures.is_empty());
    for f in failures {
        assert_eq!(
            (f.job_id.as_str(), f.worker_id.as_str(), f.error.as_str()),
            (poisoned.id.as_str(), "faulty", "no ink")
        );
        assert!(f.at >= poisoned.created_at, "{f:?}");
    }
    let done = api.finished(&healthy.id, DEADLINE).await;
    api.assert_exact(&done, &image, &[Operation::Grayscale]).await;

    let topics = Topics::new(&prefix);
    let parked = read_topic(&broker, &topics.dead_letters, DEADLINE, |m| !m.is_empty()).await;
    let key = std::str::from_utf8(parked[0].key().unwrap()).unwrap();
    assert!(key.starts_with(&poisoned.id), "{key}");
    let task = pipeline::wire::Task::decode(parked[0].payload().unwrap()).unwrap();
    assert_eq!(task.header.ops, [Operation::Invert]);
    faulty.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tile_taken_but_never_answered_is_sent_again_after_its_deadline() {
    let broker = Broker::start();
    let prefix = unique_prefix("deadline");
    let server = TestServer::start_with(&broker, &prefix, |c| {
        c.tile_size = 256;
        c.tile_timeout_secs = 2;
        c.tasks_per_worker = 16; // every tile outstanding at once
    })
    .await;
    let api = server.api();
    // A member that takes tasks, commits them, and answers nothing.
    let black_hole = FakeWorker::start(&broker, &prefix, |_| None);
    let image = test_image(1024, 1024);
    let job = api.submit(&image, &[Operation::default()]).await;
    eventually("the black hole to swallow every tile", DEADLINE, || {
        std::future::ready((black_hole.seen.load(std::sync::atomic::Ordering::SeqCst) >= 16).then_some(()))
    })
    .await;
    black_hole.stop().await;

    let worker = TestWorker::start(&broker, &prefix, "honest");
    let done = api.finished(&job.id, DEADLINE).await;
    api.assert_exact(&done, &image, &[Operation::default()]).await;
    for tile in api.tiles(&job.id).await {
        assert_eq!((tile.attempts, tile.worker_id.as_deref()), (2, Some("honest")), "tile {}", tile.idx);
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_stops_the_master_cleanly_and_its_jobs_carry_on_after() {
    let broker = Broker::start();
    let prefix = unique_prefix("term-master");
    let data = tempfile::tempdir().unwrap();
    let (mut master, api) = server_process(Path::new(SERVER), &broker, &prefix, data.path(), &[]);
    let image = test_image(1024, 1024);
    let job = api.submit(&image, &[Operation::Grayscale]).await;
    let status = master.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "server exited with {status}");

    let (_master, api) = server_process(Path::new(SERVER), &broker, &prefix, data.path(), &[]);
    let worker = TestWorker::start(&broker, &prefix, "t-1");
    let done = api.finished(&job.id, DEADLINE).await;
    api.assert_exact(&done, &image, &[Operation::Grayscale]).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_result_that_cannot_be_written_leaves_the_job_resumable() {
    let broker = Broker::start();
    let prefix = unique_prefix("unwritable");
    let server = TestServer::start(&broker, &prefix).await;
    let api = server.api();
    let image = test_image(1024, 1024);
    let job = api.submit(&image, &[Operation::Invert]).await;
    // Where the result goes: a directory in the way, as a full disk would be.
    let blocker = server.data.path().join("jobs").join(&job.id).join("result.png");
    std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();

    let worker = TestWorker::start(&broker, &prefix, "w");
    let stuck = api.progressed(&job.id, job.tiles_total, DEADLINE).await;
    assert_eq!(stuck.status, JobStatus::Running, "{:?}", stuck.error);
    std::fs::remove_dir_all(&blocker).unwrap();
    // Written on a later try, from the tiles it kept.
    let done = api.finished(&job.id, DEADLINE).await;
    api.assert_exact(&done, &image, &[Operation::Invert]).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_result_that_cannot_be_stored_is_parked_and_other_jobs_carry_on() {
    let broker = Broker::start();
    let prefix = unique_prefix("stuck-result");
    let server = TestServer::start_with(&broker, &prefix, |c| c.tile_timeout_secs = 600).await;
    let api = server.api();
    let image = test_image(1024, 1024);
    let stuck = api.submit(&image, &[Operation::Invert]).await;
    // A directory where the job's done tiles go: storing any of its results
    // fails every time.
    let tiles = server.data.path().join("jobs").join(&stuck.id).join("tiles");
    std::fs::create_dir_all(tiles.join("done").join("in-the-way")).unwrap();
    let other = api.submit(&image, &[Operation::Grayscale]).await;

    let worker = TestWorker::start(&broker, &prefix, "w");
    let done = api.finished(&other.id, DEADLINE).await;
    api.assert_exact(&done, &image, &[Operation::Grayscale]).await;
    let topics = Topics::new(&prefix);
    let all = stuck.tiles_total as usize;
    let parked = read_topic(&broker, &topics.dead_letters, DEADLINE, |m| m.len() >= all).await;
    let mut keys: Vec<String> = parked.iter().map(|m| String::from_utf8_lossy(m.key().unwrap()).into()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys, (0..all).map(|t| format!("{}/{t}", stuck.id)).collect::<Vec<_>>());
    let (_, reason) =
        parked[0].headers().unwrap().iter().map(|h| (h.key, h.value)).find(|(k, _)| *k == "error").unwrap();
    assert!(String::from_utf8_lossy(reason.unwrap()).contains("storing the result failed"));
    let job = api.job(&stuck.id).await;
    assert_eq!((job.status, job.tiles_done), (JobStatus::Running, 0), "nothing stored, nothing lost");
    worker.stop().await;
    // Stopped while the broker is still there: its consumers leave their
    // groups at once, and the stuck job's encoder stops waiting for tile 0.
    server.stop().await;
}
