//! The dispatch window: only a few tasks wait on the broker, they spread over
//! the partitions, and a tile sent again goes to another partition.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use app::api::{JobStatus, Tile};
use pipeline::Operation;
use pipeline::wire::Topics;
use rdkafka::Message;
use testkit::*;

const DEADLINE: Duration = Duration::from_secs(120);

/// Tiles sent and not yet done, as the store sees them. The store records a
/// tile done before its slot is given back, and a dispatch after the broker
/// took it, so this never counts more than the master holds.
fn outstanding(tiles: &[Tile]) -> usize {
    tiles.iter().filter(|t| t.attempts > 0 && t.status != app::api::TileStatus::Done).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_a_window_of_tasks_waits_on_the_broker() {
    let broker = Broker::start();
    let prefix = unique_prefix("window");
    let server = TestServer::start_with(&broker, &prefix, |c| {
        c.tile_size = 128; // 64 tiles
        c.tasks_per_worker = 3;
    })
    .await;
    let api = server.api();
    let image = test_image(1024, 1024);
    let job = api.submit(&image, &[Operation::default()]).await;

    // No worker yet: the window is one worker's, three tasks.
    eventually("the window to fill", DEADLINE, || async {
        (outstanding(&api.tiles(&job.id).await) == 3).then_some(())
    })
    .await;
    let sent = |tiles: &[Tile]| tiles.iter().filter(|t| t.attempts > 0).count();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(sent(&api.tiles(&job.id).await), 3, "a task was sent beyond the window");
    }

    // Two workers: six outstanding at most, all the way through.
    let workers = [TestWorker::start(&broker, &prefix, "w-1"), TestWorker::start(&broker, &prefix, "w-2")];
    let mut most = 0;
    let done = loop {
        let tiles = api.tiles(&job.id).await;
        most = most.max(outstanding(&tiles));
        assert!(most <= 6, "{most} tasks outstanding with two workers of three each");
        let job = api.job(&job.id).await;
        if job.status.is_finished() {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done.status, JobStatus::Done);
    api.assert_exact(&done, &image, &[Operation::default()]).await;

    // The master chose the partitions: every one of the topic's four was used.
    let topics = Topics::new(&prefix);
    let tasks = read_topic(&broker, &topics.tasks, DEADLINE, |m| m.len() >= 64).await;
    let partitions: HashSet<i32> = tasks.iter().map(|m| m.partition()).collect();
    assert_eq!(partitions.len(), 4, "{partitions:?}");
    for w in workers {
        w.stop().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tile_sent_again_goes_to_another_partition() {
    let broker = Broker::start();
    let prefix = unique_prefix("elsewhere");
    let server = TestServer::start(&broker, &prefix).await;
    let api = server.api();
    // Fails every tile's first sending, as a worker lacking an operation
    // would; answers the second.
    let picky = FakeWorker::start(&broker, &prefix, |task| {
        let first = task.header.attempt == 1;
        Some(answer(task, "picky", first.then_some("not here")))
    });
    let image = test_image(1024, 1024);
    let job = api.submit(&image, &[Operation::Invert]).await;
    let done = api.finished(&job.id, DEADLINE).await;
    assert_eq!(done.status, JobStatus::Done, "{:?}", done.error);
    api.assert_exact(&done, &image, &[Operation::Invert]).await;

    let topics = Topics::new(&prefix);
    let tasks = read_topic(&broker, &topics.tasks, DEADLINE, |m| m.len() >= 8).await;
    let mut placements: HashMap<u32, Vec<(u32, i32)>> = HashMap::new();
    for m in &tasks {
        let h = pipeline::wire::Task::decode(m.payload().unwrap()).unwrap().header;
        placements.entry(h.tile).or_default().push((h.attempt, m.partition()));
    }
    assert_eq!(placements.len(), 4);
    for (tile, mut sent) in placements {
        sent.sort();
        assert_eq!(sent.len(), 2, "tile {tile}: {sent:?}");
        assert_ne!(sent[0].1, sent[1].1, "tile {tile} was sent again to the same partition");
    }
    picky.stop().await;
    server.stop().await;
}

/// `tilepipe_results_paused` from `/metrics`.
async fn results_paused(api: &Api) -> Option<u8> {
    let text = api.get("/metrics").await.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix("tilepipe_results_paused ")?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_master_stops_polling_for_results_and_wakes_for_the_next_job() {
    let broker = Broker::start();
    let prefix = unique_prefix("idle");
    let server = TestServer::start(&broker, &prefix).await;
    let api = server.api();
    let worker = TestWorker::start(&broker, &prefix, "w-1");
    for round in 0..2 {
        // Another image each time, so the result cache cannot answer it.
        let image = test_image(1024, 1024 + 64 * round);
        // Nothing outstanding for a while: the reader pauses.
        eventually("the results reader to pause", DEADLINE, || async {
            (results_paused(&api).await == Some(1)).then_some(())
        })
        .await;
        let job = api.submit(&image, &[Operation::default()]).await;
        let done = api.finished(&job.id, DEADLINE).await;
        assert_eq!(done.status, JobStatus::Done, "round {round}: {:?}", done.error);
        assert_eq!(done.cached_from, None);
        api.assert_exact(&done, &image, &[Operation::default()]).await;
    }
    worker.stop().await;
    server.stop().await;
}
