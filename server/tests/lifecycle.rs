//! Many jobs at once, and a job's end by cancel and delete.

use std::time::Duration;

use app::api::{ApiError, Job, JobStatus};
use pipeline::wire::RawReply;
use pipeline::{Operation, ops};
use testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_jobs_all_complete_without_cross_talk() {
    let broker = Broker::start();
    let prefix = unique_prefix("many");
    let server = TestServer::start(&broker, &prefix).await;
    let workers = [TestWorker::start(&broker, &prefix, "m-1"), TestWorker::start(&broker, &prefix, "m-2")];

    // Twenty different images (different sizes and content), uploaded at once.
    let images: Vec<_> = (0..20u32).map(|i| test_image(1024 + 37 * i, 1024 + 11 * i)).collect();
    let names: Vec<String> = (0..images.len()).map(|i| format!("img-{i}.png")).collect();
    let uploads = images.iter().zip(&names).map(|(image, name)| server.upload(name, png(image)));
    let mut jobs = Vec::new();
    for response in futures::future::join_all(uploads).await {
        assert_eq!(response.status(), 201);
        jobs.push(response.json::<Job>().await.unwrap());
    }

    for (job, image) in jobs.iter().zip(&images) {
        let done = eventually("every job to finish", Duration::from_secs(180), || async {
            let j = server.job(&job.id).await;
            j.status.is_finished().then_some(j)
        })
        .await;
        assert_eq!(done.status, JobStatus::Done, "{}: {:?}", done.filename, done.error);
        assert_eq!(done.tiles_done, done.tiles_total);
        let bytes =
            reqwest::get(server.url(&format!("/api/jobs/{}/result", job.id))).await.unwrap().bytes().await.unwrap();
        let result = image::load_from_memory(&bytes).unwrap().into_rgb8();
        let expected = ops::process_whole(&[Operation::default()], image);
        assert!(result.as_raw() == &expected.pixels, "{} does not match its own image", done.filename);
    }
    let stats: app::api::Stats = reqwest::get(server.url("/api/stats")).await.unwrap().json().await.unwrap();
    let tiles: u32 = jobs.iter().map(|j| j.tiles_total).sum();
    assert_eq!((stats.jobs_done, stats.tiles_done), (20, u64::from(tiles)));

    for w in workers {
        w.stop().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_a_job_without_sending_its_tiles_again() {
    let broker = Broker::start();
    let prefix = unique_prefix("restart");
    // No worker yet: the job's tiles wait in the broker across the restart.
    let server = TestServer::start(&broker, &prefix).await;
    let image = test_image(1024, 1024);
    let job = server.api().submit(&image, &[Operation::default()]).await;
    eventually("every tile to be sent", Duration::from_secs(30), || async {
        let tiles = server.api().tiles(&job.id).await;
        (tiles.len() == 4 && tiles.iter().all(|t| t.attempts == 1)).then_some(())
    })
    .await;

    let server = server.restart(&broker).await;
    assert_eq!(server.job(&job.id).await.status, JobStatus::Running);
    let worker = TestWorker::start(&broker, &prefix, "after-restart");
    let done = server.api().finished(&job.id, Duration::from_secs(120)).await;
    server.api().assert_exact(&done, &image, &[Operation::default()]).await;
    assert!(server.api().tiles(&job.id).await.iter().all(|t| t.attempts == 1), "a tile was sent twice");
    worker.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_cancelled_then_deleted_with_its_files() {
    let broker = Broker::start();
    // No worker: the job stays running until it is cancelled.
    let server = TestServer::start(&broker, &unique_prefix("cancel")).await;
    let client = reqwest::Client::new();

    let job: Job = server.upload("slow.png", png(&test_image(1500, 1500))).await.json().await.unwrap();
    eventually("the job to run", Duration::from_secs(30), || async {
        (server.job(&job.id).await.status == JobStatus::Running).then_some(())
    })
    .await;
    let job_dir = server.data.path().join("jobs").join(&job.id);
    assert!(job_dir.join("input.png").exists());

    let running_delete = client.delete(server.url(&format!("/api/jobs/{}", job.id))).send().await.unwrap();
    assert_eq!(running_delete.status(), 409);
    assert_eq!(running_delete.json::<ApiError>().await.unwrap().error, "still_running");

    let cancel = client.post(server.url(&format!("/api/jobs/{}/cancel", job.id))).send().await.unwrap();
    assert_eq!(cancel.status(), 200);
    let cancelled: Job = cancel.json().await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(cancelled.finished_at.is_some());

    let again = client.post(server.url(&format!("/api/jobs/{}/cancel", job.id))).send().await.unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(again.json::<ApiError>().await.unwrap().error, "already_finished");

    let deleted = client.delete(server.url(&format!("/api/jobs/{}", job.id))).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(reqwest::get(server.url(&format!("/api/jobs/{}", job.id))).await.unwrap().status(), 404);
    assert!(!job_dir.exists(), "the job's files are gone");
    let jobs: Vec<Job> = reqwest::get(server.url("/api/jobs")).await.unwrap().json().await.unwrap();
    assert!(jobs.is_empty());

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_skip_the_tiles_of_a_cancelled_job() {
    let broker = Broker::start();
    let prefix = unique_prefix("skip");
    let server = TestServer::start_with(&broker, &prefix, |c| {
        c.tile_size = 256;
        c.tasks_per_worker = 16; // every tile outstanding at once
    })
    .await;
    let api = server.api();
    let image = test_image(1024, 1024);
    // Sent, then cancelled before any worker exists: its 16 tasks wait in the broker.
    let cancelled = api.submit(&image, &[Operation::default()]).await;
    eventually("every tile to be sent", Duration::from_secs(30), || async {
        let tiles = api.tiles(&cancelled.id).await;
        (tiles.len() == 16 && tiles.iter().all(|t| t.attempts == 1)).then_some(())
    })
    .await;
    let client = reqwest::Client::new();
    let cancel = client.post(api.url(&format!("/api/jobs/{}/cancel", cancelled.id))).send().await.unwrap();
    assert_eq!(cancel.status(), 200);

    let worker = TestWorker::start(&broker, &prefix, "skipper");
    let next = api.submit(&image, &[Operation::Invert]).await;
    let done = api.finished(&next.id, Duration::from_secs(120)).await;
    api.assert_exact(&done, &image, &[Operation::Invert]).await;
    // The worker answered only the second job's tiles: every reply on the
    // results topic, read to its end, is one of them (the master would
    // ignore replies to a cancelled job, so its counts cannot tell).
    let topics = pipeline::wire::Topics::new(&prefix);
    let length = topic_length(&broker, &topics.results).await;
    let replies = read_topic(&broker, &topics.results, Duration::from_secs(30), |m| m.len() >= length).await;
    let answered: Vec<String> = replies
        .iter()
        .map(|m| match RawReply::parse(rdkafka::Message::payload(m).unwrap()).unwrap() {
            RawReply::Done(header, _) => header.job_id,
            RawReply::Failed(failure) => failure.job_id,
        })
        .collect();
    assert_eq!(answered.len(), 16, "{answered:?}");
    assert!(answered.iter().all(|job| *job == next.id), "a cancelled job's tile was answered: {answered:?}");
    assert_eq!(api.job(&cancelled.id).await.tiles_done, 0);
    worker.stop().await;
}
