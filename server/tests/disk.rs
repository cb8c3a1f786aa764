//! Disk use is bounded: uploads stop at a free-space floor, finished jobs
//! can expire, and files without a job do not outlive a restart.

use std::time::Duration;

use app::api::ApiError;
use testkit::*;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_refused_below_the_free_space_floor() {
    let broker = Broker::start();
    // More free space than any disk has.
    let server = TestServer::start_with(&broker, &unique_prefix("disk-floor"), |c| c.min_free_disk = u64::MAX).await;
    let refused = server.upload("a.png", png(&test_image(1024, 1024))).await;
    assert_eq!(refused.status(), 507);
    assert_eq!(refused.json::<ApiError>().await.unwrap().error, "disk_full");
    let jobs: Vec<app::api::Job> = reqwest::get(server.url("/api/jobs")).await.unwrap().json().await.unwrap();
    assert!(jobs.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_expire_and_orphan_files_are_removed() {
    let broker = Broker::start();
    let server = TestServer::start(&broker, &unique_prefix("retention")).await;
    let api = server.api();
    let kept = api.submit(&test_image(1024, 1024), &[pipeline::Operation::Invert]).await;
    let old = api.submit(&test_image(1024, 1024), &[pipeline::Operation::Invert]).await;
    let client = reqwest::Client::new();
    let cancel = client.post(server.url(&format!("/api/jobs/{}/cancel", old.id))).send().await.unwrap();
    assert_eq!(cancel.status(), 200);
    // An upload whose job was never recorded (a crash in between).
    let jobs_dir = server.data.path().join("jobs");
    let orphan = jobs_dir.join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("input.png"), b"left behind").unwrap();
    // An upload being received when the server stopped.
    let unfinished = server.data.path().join("uploads").join("upload-x.part");
    std::fs::create_dir_all(unfinished.parent().unwrap()).unwrap();
    std::fs::write(&unfinished, b"half an image").unwrap();

    let server = server.restart_with(&broker, |c| c.retention = Some(Duration::from_millis(1))).await;
    assert!(!orphan.exists(), "an orphan job directory survived a restart");
    assert!(!unfinished.exists(), "an unfinished upload survived a restart");
    let api = server.api();
    // The row goes first and the files a moment later, so wait for both.
    eventually("the cancelled job and its files to expire", DEADLINE, || async {
        let response = reqwest::get(server.url(&format!("/api/jobs/{}", old.id))).await.unwrap();
        (response.status() == 404 && !jobs_dir.join(&old.id).exists()).then_some(())
    })
    .await;
    // A job still running is not finished, so it does not expire.
    assert!(!api.job(&kept.id).await.status.is_finished());
    assert!(jobs_dir.join(&kept.id).exists());
    server.stop().await;
}
