//! Batches: jobs submitted under one id, followed as one, downloaded as one
//! zip streamed from the result files, deleted together.

use std::io::Read;
use std::time::Duration;

use app::api::{ApiError, Batch};
use testkit::*;

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_followed_zipped_and_deleted_as_one() {
    let broker = Broker::start();
    let prefix = unique_prefix("batches");
    let server = TestServer::start(&broker, &prefix).await;
    let worker = TestWorker::start(&broker, &prefix, "batch-worker");
    let api = server.api();
    let client = reqwest::Client::new();

    let created = client.post(server.url("/api/batches")).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let batch: Batch = created.json().await.unwrap();
    assert_eq!((batch.images_total, batch.jobs.len()), (0, 0));

    let ops = r#"[{"op":"invert"}]"#;
    let fields = [("batch", batch.id.as_str()), ("ops", ops)];
    let (a, b) = (png(&test_image(1024, 1024)), png(&test_image(1100, 1030)));
    let first = api.submit_with("a.png", a.clone(), &fields).await;
    let second = api.submit_with("photos/b.png", b, &fields).await;
    api.finished(&first.id, DEADLINE).await;
    // The same file again: answered from the cache, and still in the batch.
    let again = api.submit_with("a.png", a, &fields).await;
    assert!(again.cached_from.is_some());
    for id in [&first.id, &second.id, &again.id] {
        api.finished(id, DEADLINE).await;
    }
    let unknown = uuid::Uuid::new_v4().to_string();
    let refused = api.upload_with("c.png", png(&test_image(1024, 1024)), &[("batch", &unknown)]).await;
    assert_eq!(refused.status(), 404);
    assert!(refused.json::<ApiError>().await.unwrap().message.contains("batch"));

    let shown: Batch =
        client.get(server.url(&format!("/api/batches/{}", batch.id))).send().await.unwrap().json().await.unwrap();
    assert_eq!((shown.images_total, shown.images_done, shown.images_failed), (3, 3, 0));
    assert_eq!(shown.tiles_done, shown.tiles_total);
    assert!(shown.jobs.iter().all(|j| j.batch_id.as_deref() == Some(batch.id.as_str())));

    let zip = client.get(server.url(&format!("/api/batches/{}/results.zip", batch.id))).send().await.unwrap();
    assert_eq!(zip.status(), 200);
    assert_eq!(zip.headers()["content-type"], "application/zip");
    let bytes = zip.bytes().await.unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let names: Vec<String> = archive.file_names().map(str::to_owned).collect();
    assert_eq!(names, ["a.png", "b.png", "a (2).png"]);
    for (name, job) in names.iter().zip([&first, &second, &again]) {
        let mut inside = Vec::new();
        archive.by_name(name).unwrap().read_to_end(&mut inside).unwrap();
        let result = client.get(server.url(&format!("/api/jobs/{}/result", job.id))).send().await.unwrap();
        assert!(inside == result.bytes().await.unwrap(), "{name} is not job {}'s result", job.id);
    }

    let deleted = client.delete(server.url(&format!("/api/batches/{}", batch.id))).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    for path in [format!("/api/batches/{}", batch.id), format!("/api/jobs/{}", first.id)] {
        assert_eq!(client.get(server.url(&path)).send().await.unwrap().status(), 404, "{path}");
    }
    assert!(!server.data.path().join("jobs").join(&first.id).exists(), "a deleted batch's files were kept");
    let missing = client.get(server.url(&format!("/api/batches/{unknown}/results.zip"))).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    worker.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_runs_again_in_its_batch() {
    let broker = Broker::start();
    let prefix = unique_prefix("retry");
    let server = TestServer::start_with(&broker, &prefix, |c| c.max_attempts = 1).await;
    let failing = FakeWorker::start(&broker, &prefix, |task| Some(answer(task, "poison", Some("out of memory"))));
    let api = server.api();
    let client = reqwest::Client::new();
    let batch: Batch = client.post(server.url("/api/batches")).send().await.unwrap().json().await.unwrap();
    let fields = [("batch", batch.id.as_str()), ("ops", r#"[{"op":"invert"}]"#)];
    let image = test_image(1024, 1024);
    let failed = api.submit_with("flaky.png", png(&image), &fields).await;
    let failed = api.finished(&failed.id, DEADLINE).await;
    assert_eq!(failed.status, app::api::JobStatus::Failed);
    failing.stop().await;
    let worker = TestWorker::start(&broker, &prefix, "healthy");

    let retried = client.post(server.url(&format!("/api/jobs/{}/retry", failed.id))).send().await.unwrap();
    assert_eq!(retried.status(), 201);
    let again: app::api::Job = retried.json().await.unwrap();
    assert_ne!(again.id, failed.id);
    assert_eq!((again.filename.as_str(), again.batch_id.as_deref()), ("flaky.png", Some(batch.id.as_str())));
    let again = api.finished(&again.id, DEADLINE).await;
    api.assert_exact(&again, &image, &[pipeline::Operation::Invert]).await;
    let old = client.get(server.url(&format!("/api/jobs/{}", failed.id))).send().await.unwrap();
    assert_eq!(old.status(), 404, "the failed job is replaced");
    let shown: Batch =
        client.get(server.url(&format!("/api/batches/{}", batch.id))).send().await.unwrap().json().await.unwrap();
    assert_eq!((shown.images_total, shown.images_done, shown.images_failed), (1, 1, 0));

    let done_again = client.post(server.url(&format!("/api/jobs/{}/retry", again.id))).send().await.unwrap();
    assert_eq!(done_again.status(), 409);
    assert_eq!(done_again.json::<ApiError>().await.unwrap().error, "not_failed");

    worker.stop().await;
    server.stop().await;
}
