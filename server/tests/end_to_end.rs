//! A real broker, a real server with its SQLite file, two real workers: a
//! 1536x1100 image goes through the whole system and comes back equal, bit
//! for bit, to the same blur applied to the whole image at once.

use std::collections::HashSet;
use std::time::Duration;

use app::api::{Event, JobStatus, Worker, WorkerStatus};
use pipeline::{Operation, ops};
use testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_process_an_image_seamlessly() {
    let broker = Broker::start();
    let prefix = unique_prefix("e2e");
    let server = TestServer::start(&broker, &prefix).await;
    let workers = [TestWorker::start(&broker, &prefix, "w-one"), TestWorker::start(&broker, &prefix, "w-two")];

    let events = record_events(&server, |e| matches!(e, Event::Job(j) if j.status.is_finished())).await;
    let image = test_image(1536, 1100);
    let response = server.upload("mountains.png", png(&image)).await;
    assert_eq!(response.status(), 201);
    let created: app::api::Job = response.json().await.unwrap();
    assert_eq!((created.width, created.height, created.tiles_total), (1536, 1100, 9));
    assert!(matches!(created.status, JobStatus::Queued | JobStatus::Running));

    let job = eventually("the job to finish", Duration::from_secs(120), || async {
        let job = server.job(&created.id).await;
        job.status.is_finished().then_some(job)
    })
    .await;
    assert_eq!(job.status, JobStatus::Done, "job failed: {:?}", job.error);
    assert_eq!(job.tiles_done, 9);
    let stages = job.stages.expect("a done job says where its time went");
    assert!(stages.decode_ms > 0.0 && stages.process_ms >= stages.collect_ms && stages.encode_ms > 0.0, "{stages:?}");

    // Every tile is recorded as done, by one of our workers.
    let tiles: Vec<app::api::Tile> =
        reqwest::get(server.url(&format!("/api/jobs/{}/tiles", job.id))).await.unwrap().json().await.unwrap();
    assert_eq!(tiles.len(), 9);
    let names: HashSet<_> = ["w-one", "w-two"].into_iter().collect();
    for tile in &tiles {
        assert_eq!(tile.status, app::api::TileStatus::Done);
        assert!(names.contains(tile.worker_id.as_deref().unwrap_or("")), "tile {} by {:?}", tile.idx, tile.worker_id);
        assert!(tile.elapsed_ms.unwrap() > 0.0);
    }

    // The original is served back as it came, for the before/after view.
    let input = reqwest::get(server.url(&format!("/api/jobs/{}/input", job.id))).await.unwrap();
    assert_eq!((input.status().as_u16(), input.headers()["content-type"].to_str().unwrap()), (200, "image/png"));
    assert!(input.bytes().await.unwrap() == png(&image), "the input differs from the upload");

    // The result equals the whole-image blur exactly.
    let response = reqwest::get(server.url(&format!("/api/jobs/{}/result", job.id))).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    let bytes = response.bytes().await.unwrap();
    let result = image::load_from_memory(&bytes).unwrap().into_rgb8();
    let expected = ops::process_whole(&[Operation::default()], &image);
    assert_eq!(result.dimensions(), (1536, 1100));
    assert!(result.as_raw() == &expected.pixels, "distributed result differs from the whole-image blur");

    // The event stream told the story live: every tile once, progress that
    // only grows, and the end.
    let events = tokio::time::timeout(Duration::from_secs(30), events).await.unwrap().unwrap();
    let tiles: HashSet<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::Tile(t) if t.job_id == job.id => Some(t.tile),
            _ => None,
        })
        .collect();
    assert_eq!(tiles, (0..9).collect());
    let progress: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::Job(j) if j.id == job.id => Some(j.tiles_done),
            _ => None,
        })
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "progress went backwards: {progress:?}");
    assert!(matches!(events.last(), Some(Event::Job(j)) if j.status == JobStatus::Done && j.tiles_done == 9));

    // Both workers are known and alive.
    let listed: Vec<Worker> = eventually("both workers to report", Duration::from_secs(20), || async {
        let w: Vec<Worker> = reqwest::get(server.url("/api/workers")).await.unwrap().json().await.unwrap();
        (w.len() == 2).then_some(w)
    })
    .await;
    assert!(listed.iter().all(|w| w.status == WorkerStatus::Alive));

    let stats: app::api::Stats = reqwest::get(server.url("/api/stats")).await.unwrap().json().await.unwrap();
    assert_eq!((stats.jobs_done, stats.tiles_done, stats.workers_alive), (1, 9, 2));

    // A chain of operations runs through the same path, exactly too.
    let chain = vec![Operation::Grayscale, Operation::GaussianBlur { kernel: 9, sigma: None }, Operation::Invert];
    let small = test_image(1100, 1030);
    let part = reqwest::multipart::Part::bytes(png(&small)).file_name("chain.png");
    let form = reqwest::multipart::Form::new().text("ops", serde_json::to_string(&chain).unwrap()).part("image", part);
    let response = reqwest::Client::new().post(server.url("/api/jobs")).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let created: app::api::Job = response.json().await.unwrap();
    assert_eq!(created.ops, chain);
    let job = eventually("the chain job to finish", Duration::from_secs(120), || async {
        let job = server.job(&created.id).await;
        job.status.is_finished().then_some(job)
    })
    .await;
    assert_eq!(job.status, JobStatus::Done, "job failed: {:?}", job.error);
    let bytes = reqwest::get(server.url(&format!("/api/jobs/{}/result", job.id))).await.unwrap().bytes().await.unwrap();
    let result = image::load_from_memory(&bytes).unwrap().into_rgb8();
    assert!(result.as_raw() == &ops::process_whole(&chain, &small).pixels, "chain result differs");

    for w in workers {
        w.stop().await;
    }
    server.stop().await;
}
