//! The SQLite store against a real database file, migrated from scratch.

use std::time::Duration;

use app::api::{JobStatus, Output, TileStatus, WorkerStatus};
use pipeline::wire::Heartbeat;
use pipeline::{Operation, TileGrid};
use server::store::{NewJob, Store};

async fn store_with_job(dir: &tempfile::TempDir, id: &str) -> Store {
    let store = Store::open(&dir.path().join("nested/dir/tilepipe.db")).await.unwrap();
    let grid = TileGrid::new(1100, 1024, 512);
    store
        .insert_job(&NewJob {
            id,
            filename: "a.png",
            width: 1100,
            height: 1024,
            tile_size: 512,
            ops: &[Operation::default()],
            tiles_total: grid.len(),
            input_bytes: 1234,
            created_at: 1_000,
            output: Output::Jpeg { quality: 80 },
            cache_key: Some("key"),
            batch_id: None,
        })
        .await
        .unwrap();
    store.start_job(id, grid.tiles()).await.unwrap();
    store
}

#[tokio::test]
async fn a_duplicate_result_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_job(&dir, "job-1").await;

    let job = store.job("job-1").await.unwrap().unwrap();
    assert_eq!((job.status, job.tiles_total, job.tiles_done), (JobStatus::Running, 6, 0));
    assert_eq!(job.output, Output::Jpeg { quality: 80 });

    let first = store.complete_tile("job-1", 2, "w-a", 4.5, 300, 2_000).await.unwrap().unwrap();
    assert_eq!(first.tiles_done, 1);
    assert!(store.complete_tile("job-1", 2, "w-b", 9.0, 300, 3_000).await.unwrap().is_none());

    let tiles = store.tiles("job-1").await.unwrap();
    assert_eq!(tiles.len(), 6);
    let tile = &tiles[2];
    assert_eq!((tile.status, tile.worker_id.as_deref(), tile.done_at), (TileStatus::Done, Some("w-a"), Some(2_000)));
    assert_eq!((tiles[5].x, tiles[5].y, tiles[5].width, tiles[5].height), (1024, 512, 76, 512));
    assert_eq!(store.job("job-1").await.unwrap().unwrap().tiles_done, 1);

    // Unknown tiles and jobs are not counted either.
    assert!(store.complete_tile("job-1", 99, "w-a", 1.0, 1, 1).await.unwrap().is_none());
    assert!(store.complete_tile("nope", 0, "w-a", 1.0, 1, 1).await.unwrap().is_none());
}

#[tokio::test]
async fn jobs_finish_and_reopening_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_job(&dir, "job-2").await;
    store.finish_job("job-2", JobStatus::Failed, Some("broken"), 5_000).await.unwrap();
    drop(store);

    let store = Store::open(&dir.path().join("nested/dir/tilepipe.db")).await.unwrap();
    let job = store.job("job-2").await.unwrap().unwrap();
    assert_eq!((job.status, job.error.as_deref(), job.finished_at), (JobStatus::Failed, Some("broken"), Some(5_000)));
    assert_eq!(store.jobs(10).await.unwrap().len(), 1);
    let stats = store.stats(0, Duration::from_secs(15)).await.unwrap();
    assert_eq!((stats.jobs_total, stats.jobs_failed), (1, 1));
}

#[tokio::test]
async fn workers_turn_lost_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("w.db")).await.unwrap();
    let beat = Heartbeat {
        worker_id: "w-1".into(),
        host: "h".into(),
        pid: 7,
        current_tile: Some("j/3".into()),
        tiles_done: 12,
        sent_at_ms: 0,
        cpu_percent: None,
        rss_bytes: None,
        runtime: None,
    };
    let timeout = Duration::from_secs(15);
    let worker = store.record_heartbeat(&beat, 100_000, timeout).await.unwrap();
    assert_eq!(
        (worker.status, worker.tiles_done, worker.current_tile.as_deref()),
        (WorkerStatus::Alive, 12, Some("j/3"))
    );

    let at = |now| store.workers(now, timeout);
    assert_eq!(at(115_000).await.unwrap()[0].status, WorkerStatus::Alive);
    assert_eq!(at(115_001).await.unwrap()[0].status, WorkerStatus::Lost);

    // It comes back, now reporting its resources.
    let resources =
        Heartbeat { cpu_percent: Some(93.5), rss_bytes: Some(50 << 20), runtime: Some("rust".into()), ..beat.clone() };
    let worker = store.record_heartbeat(&resources, 200_000, timeout).await.unwrap();
    assert_eq!(
        (worker.cpu_percent, worker.rss_bytes, worker.runtime.as_deref()),
        (Some(93.5), Some(50 << 20), Some("rust"))
    );
    assert_eq!(at(200_000).await.unwrap()[0].rss_bytes, Some(50 << 20));
    // A heartbeat without them (an older worker) leaves no stale figures.
    store.record_heartbeat(&beat, 200_000, timeout).await.unwrap();
    assert_eq!(at(200_000).await.unwrap()[0].cpu_percent, None);
    let workers = at(200_500).await.unwrap();
    assert_eq!((workers.len(), workers[0].status), (1, WorkerStatus::Alive));
}

#[tokio::test]
async fn dispatch_bookkeeping_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_job(&dir, "job-3").await;
    assert_eq!(store.record_dispatch("job-3", 1, 2, 40).await.unwrap(), 1);
    assert_eq!(store.record_dispatch("job-3", 1, 3, 41).await.unwrap(), 2);
    assert_eq!(store.record_dispatch("nope", 1, 3, 41).await.unwrap(), 0);
    store.complete_tile("job-3", 0, "w", 1.0, 1, 1).await.unwrap().unwrap();
    drop(store);

    let store = Store::open(&dir.path().join("nested/dir/tilepipe.db")).await.unwrap();
    assert_eq!(store.unfinished_jobs().await.unwrap(), ["job-3"]);
    let pending = store.pending_tiles("job-3").await.unwrap();
    assert_eq!(pending.iter().map(|t| t.idx).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!((pending[0].attempts, pending[0].task_partition, pending[0].task_offset), (2, Some(3), Some(41)));
    assert_eq!((pending[1].attempts, pending[1].task_partition), (0, None));
    // Resuming a running job keeps its tiles.
    assert!(store.start_job("job-3", TileGrid::new(1100, 1024, 512).tiles()).await.unwrap());
    assert_eq!(store.job("job-3").await.unwrap().unwrap().tiles_done, 1);

    // A done tile whose pixels were lost is pending again, once.
    store.reopen_tile("job-3", 0).await.unwrap();
    store.reopen_tile("job-3", 0).await.unwrap();
    assert_eq!(store.job("job-3").await.unwrap().unwrap().tiles_done, 0);
    assert_eq!(store.pending_tiles("job-3").await.unwrap().len(), 6);

    store.finish_job("job-3", JobStatus::Cancelled, None, 9).await.unwrap();
    assert!(store.unfinished_jobs().await.unwrap().is_empty());
    assert!(!store.start_job("job-3", TileGrid::new(1100, 1024, 512).tiles()).await.unwrap());
}

#[tokio::test]
async fn only_a_done_job_answers_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_job(&dir, "job-1").await;
    assert!(store.cached("key").await.unwrap().is_none(), "a running job has no result to share");
    assert!(store.finish_job("job-1", JobStatus::Done, None, 2_000).await.unwrap());
    assert_eq!(store.cached("key").await.unwrap().map(|j| j.id), Some("job-1".to_owned()));
    assert!(store.cached("other").await.unwrap().is_none());
}
