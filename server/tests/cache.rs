//! The result cache: the same bytes with the same operations and output are
//! answered at once from a done job's result, without the broker, and
//! deleting either job leaves the other whole.

use std::time::Duration;

use app::api::{Job, JobStatus};
use pipeline::Operation;
use testkit::*;

const DEADLINE: Duration = Duration::from_secs(120);

async fn bytes(api: &Api, path: &str) -> (u16, Vec<u8>) {
    let response = reqwest::get(api.url(path)).await.unwrap();
    (response.status().as_u16(), response.bytes().await.unwrap().to_vec())
}

async fn metric(api: &Api, name: &str) -> f64 {
    let text = reqwest::get(api.url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_job_is_answered_from_the_cache_and_outlives_its_source() {
    let broker = Broker::start();
    let prefix = unique_prefix("cache");
    let server = TestServer::start_with(&broker, &prefix, |c| c.tile_size = 256).await;
    let worker = TestWorker::start(&broker, &prefix, "w-cache");
    let api = server.api();
    let upload = png(&test_image(1100, 1030));
    let ops = serde_json::to_string(&[Operation::default()]).unwrap();
    let fields = [("ops", ops.as_str()), ("format", "png")];

    let first = api.submit_with("first.png", upload.clone(), &fields).await;
    assert_eq!(first.cached_from, None);
    let first = api.finished(&first.id, DEADLINE).await;
    assert_eq!(first.status, JobStatus::Done, "{:?}", first.error);
    let (_, result) = bytes(&api, &format!("/api/jobs/{}/result", first.id)).await;
    let sent = metric(&api, "tilepipe_task_bytes_total").await;
    assert!(sent > 0.0);

    // Again: done in the answer itself, sharing the result, no task sent.
    let second = api.submit_with("second.png", upload.clone(), &fields).await;
    assert_eq!(second.status, JobStatus::Done);
    assert_eq!(second.cached_from.as_deref(), Some(first.id.as_str()));
    assert_eq!((second.tiles_done, second.filename.as_str()), (second.tiles_total, "second.png"));
    assert_eq!(bytes(&api, &format!("/api/jobs/{}/result", second.id)).await, (200, result.clone()));
    assert_eq!(bytes(&api, &format!("/api/jobs/{}/input", second.id)).await, (200, upload.clone()));
    assert_eq!(metric(&api, "tilepipe_task_bytes_total").await, sent, "a cached job touched the broker");
    assert_eq!(metric(&api, "tilepipe_cache_hits_total").await, 1.0);

    // Other operations or another output are other results.
    let inverted = serde_json::to_string(&[Operation::Invert]).unwrap();
    let other = api.submit_with("third.png", upload.clone(), &[("ops", inverted.as_str()), ("format", "png")]).await;
    assert_eq!(other.cached_from, None);
    let as_jpeg = api.submit_with("fourth.png", upload.clone(), &[("ops", ops.as_str()), ("format", "jpeg")]).await;
    assert_eq!(as_jpeg.cached_from, None);
    for job in [&other, &as_jpeg] {
        assert_eq!(api.finished(&job.id, DEADLINE).await.status, JobStatus::Done);
    }

    // Deleting the source leaves the copy whole, and the copy now serves.
    let client = reqwest::Client::new();
    let deleted = client.delete(api.url(&format!("/api/jobs/{}", first.id))).send().await.unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    assert_eq!(bytes(&api, &format!("/api/jobs/{}/result", second.id)).await, (200, result.clone()));
    let third = api.submit_with("again.png", upload.clone(), &fields).await;
    assert_eq!(third.cached_from.as_deref(), Some(second.id.as_str()));
    let deleted = client.delete(api.url(&format!("/api/jobs/{}", second.id))).send().await.unwrap();
    assert!(deleted.status().is_success());
    assert_eq!(bytes(&api, &format!("/api/jobs/{}/result", third.id)).await, (200, result));
    let listed: Vec<Job> = reqwest::get(api.url("/api/jobs")).await.unwrap().json().await.unwrap();
    assert!(listed.iter().any(|j| j.id == third.id) && !listed.iter().any(|j| j.id == second.id));

    worker.stop().await;
    server.stop().await;
}
