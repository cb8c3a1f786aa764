//! Bad input gets a clear 4xx with a JSON message, and the server keeps serving.

mod common;

use app::api::ApiError;
use common::*;

async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> ApiError {
    assert_eq!(response.status(), status);
    let body: ApiError = response.json().await.expect("a JSON error body");
    assert_eq!(body.error, code, "message: {}", body.message);
    assert!(!body.message.is_empty());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_and_ids_get_json_errors() {
    let broker = Broker::start();
    let server = TestServer::start(&broker, &unique_prefix("errors")).await;

    let small =
        expect_error(server.upload("small.png", png(&test_image(800, 1200))).await, 422, "image_too_small").await;
    assert!(small.message.contains("800x1200"), "{}", small.message);
    expect_error(server.upload("notes.png", b"not an image at all".to_vec()).await, 415, "unsupported_format").await;
    expect_error(server.upload("empty.png", Vec::new()).await, 400, "empty_file").await;
    let mut truncated = png(&test_image(1024, 1024));
    truncated.truncate(30);
    expect_error(server.upload("cut.png", truncated).await, 422, "unreadable_image").await;

    let client = reqwest::Client::new();
    let no_file = client
        .post(server.url("/api/jobs"))
        .multipart(reqwest::multipart::Form::new().text("note", "hello"))
        .send()
        .await
        .unwrap();
    expect_error(no_file, 400, "missing_image").await;
    let not_multipart = client.post(server.url("/api/jobs")).body("x").send().await.unwrap();
    assert_eq!(not_multipart.status(), 400);

    let part = reqwest::multipart::Part::bytes(png(&test_image(1024, 1024))).file_name("a.png");
    let bad_ops =
        reqwest::multipart::Form::new().text("ops", r#"[{"op":"gaussian_blur","kernel":50}]"#).part("image", part);
    let bad_ops = client.post(server.url("/api/jobs")).multipart(bad_ops).send().await.unwrap();
    let body = expect_error(bad_ops, 422, "invalid_ops").await;
    assert!(body.message.contains("kernel"), "{}", body.message);

    let get = |path: &str| reqwest::get(server.url(path));
    expect_error(get("/api/jobs/not-a-uuid").await.unwrap(), 404, "not_found").await;
    expect_error(get("/api/jobs/..%2F..%2Fetc%2Fpasswd/result").await.unwrap(), 404, "not_found").await;
    expect_error(get(&format!("/api/jobs/{}", uuid::Uuid::new_v4())).await.unwrap(), 404, "not_found").await;
    expect_error(get("/api/nothing-here").await.unwrap(), 404, "not_found").await;

    // No job was created by any of it, and the server still answers.
    let jobs: Vec<app::api::Job> = get("/api/jobs").await.unwrap().json().await.unwrap();
    assert!(jobs.is_empty());

    // A job accepted with no worker running is not ready, and says so.
    let created = server.upload("fine.png", png(&test_image(1024, 1024))).await;
    assert_eq!(created.status(), 201);
    let job: app::api::Job = created.json().await.unwrap();
    expect_error(get(&format!("/api/jobs/{}/result", job.id)).await.unwrap(), 409, "not_ready").await;

    server.stop().await;
}
