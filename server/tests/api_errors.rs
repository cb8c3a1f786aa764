//! Bad input gets a clear 4xx with a JSON message, and the server keeps serving.

use app::api::ApiError;
use testkit::*;

fn bmp(frame: &pipeline::Frame) -> Vec<u8> {
    let mut bytes = Vec::new();
    let image = image::RgbImage::from_raw(frame.width, frame.height, frame.pixels.clone()).unwrap();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Bmp).unwrap();
    bytes
}

/// A 24-bit BMP's headers saying `width` x `height`, and no pixels.
fn bmp_header_only(width: i32, height: i32) -> Vec<u8> {
    let mut out = b"BM".to_vec();
    for field in [54 + width as u32 * height as u32 * 3, 0, 54, 40] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0; 24]);
    out
}

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
    // The browser checks with the same limits, in the same words.
    let limits: app::api::Limits = reqwest::get(server.url("/api/limits")).await.unwrap().json().await.unwrap();
    assert_eq!((limits.size.min_dimension, limits.size.max_pixels), (1024, 4_000_000_000));
    assert_eq!(limits.size.check(800, 1200).unwrap_err().message(), small.message);
    assert_eq!(limits.size.check(1024, 1024), Ok(()));
    let huge = server.upload("huge.png", png_header_only(65_535, 65_535)).await;
    let huge = expect_error(huge, 413, "image_too_large").await;
    assert_eq!(limits.size.check(65_535, 65_535).unwrap_err().message(), huge.message);
    expect_error(server.upload("notes.png", b"not an image at all".to_vec()).await, 415, "unsupported_format").await;
    expect_error(server.upload("empty.png", Vec::new()).await, 400, "empty_file").await;
    let mut truncated = png(&test_image(1024, 1024));
    truncated.truncate(30);
    expect_error(server.upload("cut.png", truncated).await, 422, "unreadable_image").await;
    // A header that passes with pixel data cut short: refused before 201.
    let mut cut_short = png(&test_image(1024, 1024));
    cut_short.truncate(cut_short.len() / 2);
    expect_error(server.upload("half.png", cut_short).await, 422, "unreadable_image").await;

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

    // Output formats and qualities the server cannot write, in words.
    let with_output = |image: Vec<u8>, fields: &[(&'static str, &'static str)]| {
        let form = fields.iter().fold(
            reqwest::multipart::Form::new().part("image", reqwest::multipart::Part::bytes(image).file_name("a.png")),
            |form, (k, v)| form.text(*k, *v),
        );
        client.post(server.url("/api/jobs")).multipart(form).send()
    };
    let fine = || png(&test_image(1024, 1024));
    let body = expect_error(with_output(fine(), &[("format", "gif")]).await.unwrap(), 422, "invalid_output").await;
    assert_eq!(body.message, "format must be same, png, jpeg, webp or tiff, got gif");
    let body = expect_error(
        with_output(fine(), &[("format", "jpeg"), ("quality", "0")]).await.unwrap(),
        422,
        "invalid_output",
    )
    .await;
    assert_eq!(body.message, "quality must be within 1..=100, got 0");
    let wide = with_output(png_header_only(16_384, 1024), &[("format", "webp")]).await.unwrap();
    let body = expect_error(wide, 422, "invalid_output").await;
    assert!(body.message.contains("at most 16383 pixels"), "{}", body.message);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_bombs_floods_and_oversized_uploads() {
    let broker = Broker::start();
    let server = TestServer::start_with(&broker, &unique_prefix("limits"), |c| {
        c.max_upload_bytes = 8 << 20;
        c.max_pixels = 50_000_000;
        c.max_active_jobs = 1;
    })
    .await;

    // A 100000x100000 PNG declared in 57 bytes: refused from its header alone.
    let bomb = png_header_only(100_000, 100_000);
    assert!(bomb.len() < 100);
    let started = std::time::Instant::now();
    let body = expect_error(server.upload("bomb.png", bomb).await, 413, "image_too_large").await;
    assert!(body.message.contains("100000x100000"), "{}", body.message);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    expect_error(server.upload("wide.png", png_header_only(70_000, 1_024)).await, 413, "image_too_large").await;
    let zero = expect_error(server.upload("zero.png", png_header_only(0, 1_024)).await, 422, "unreadable_image").await;
    assert!(zero.message.contains("dimensions"), "{}", zero.message);

    // A body over the upload limit is cut off with 413 and JSON while it is
    // still streaming: 1 GiB declared, 12 MiB sent, the answer comes anyway.
    let (status, body) = partial_upload(&server.base, 1 << 30, &png_header_only(1024, 1024), 12 << 20).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(serde_json::from_str::<ApiError>(&body).unwrap().error, "too_large");
    // Uploads stream to disk, and their first bytes are checked as they
    // arrive: a bomb's header is refused before the rest is read.
    let (status, body) = partial_upload(&server.base, 1 << 30, &png_header_only(100_000, 100_000), 12 << 20).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(serde_json::from_str::<ApiError>(&body).unwrap().error, "image_too_large");
    let (status, body) = partial_upload(&server.base, 1 << 30, b"plain text, not an image", 12 << 20).await;
    assert_eq!((status, serde_json::from_str::<ApiError>(&body).unwrap().error.as_str()), (415, "unsupported_format"));
    let uploads = server.data.path().join("uploads");
    eventually("refused uploads' files to be deleted", std::time::Duration::from_secs(10), || async {
        let left = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
        (left == 0).then_some(())
    })
    .await;

    // A header that lies about the pixels that follow is refused before any job exists.
    let liar =
        expect_error(server.upload("liar.png", png_header_only(1_024, 1_024)).await, 422, "unreadable_image").await;
    assert!(liar.message.contains("could not be read"), "{}", liar.message);
    let jobs: Vec<app::api::Job> = reqwest::get(server.url("/api/jobs")).await.unwrap().json().await.unwrap();
    assert!(jobs.is_empty());

    // One active job allowed: the second waits its turn with 503 and Retry-After.
    let first = server.upload("one.png", png(&test_image(1024, 1024))).await;
    assert_eq!(first.status(), 201);
    let busy = server.upload("two.png", png(&test_image(1024, 1024))).await;
    assert_eq!(busy.headers()["retry-after"], "10");
    expect_error(busy, 503, "busy").await;

    // Pages and API answers carry the security headers.
    for path in ["/", "/api/jobs"] {
        let r = reqwest::get(server.url(path)).await.unwrap();
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(r.headers()["x-frame-options"], "DENY", "{path}");
        assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    }
    // Pages allow only scripts carrying this response's nonce.
    let page = reqwest::get(server.url("/")).await.unwrap().text().await.unwrap();
    let policy =
        page.split(r#"http-equiv="Content-Security-Policy" content=""#).nth(1).unwrap().split('"').next().unwrap();
    let nonce = policy.split("'nonce-").nth(1).unwrap().split('\'').next().unwrap().to_owned();
    assert!(nonce.len() >= 16, "{policy}");
    assert!(page.contains(&format!(r#"nonce="{nonce}""#)), "the hydration script lacks the nonce");
    let again = reqwest::get(server.url("/")).await.unwrap().text().await.unwrap();
    assert!(!again.contains(&nonce), "a nonce was used twice");
    server.stop().await;
}

/// Each job reserves the memory it is estimated to need from the master's
/// budget when it is admitted, atomically with its creation, gives back
/// what its decoded image took once that is let go, and the rest when it
/// stops: the excess gets 503 (never an OOM), an image the budget could
/// never hold gets 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_admits_jobs_until_it_is_spent() {
    async fn upload(server: &TestServer, name: &str, image: &[u8]) -> reqwest::Response {
        // A WebP result is assembled whole: its share stays large.
        server.api().upload_with(name, image.to_vec(), &[("format", "webp")]).await
    }
    let broker = Broker::start();
    // No worker: admitted jobs stay running, holding their share.
    let budget = |c: &mut server::Config| c.memory_budget = 120 << 20;
    let server = TestServer::start_with(&broker, &unique_prefix("budget"), budget).await;
    // 2048x2048 decoded whole (a BMP; a PNG would be read by rows): 60 MiB
    // each, 41 once the decoded image is let go. 1280x1280: 34, then 26.
    let (image, small) = (bmp(&test_image(2048, 2048)), bmp(&test_image(1280, 1280)));
    let first: app::api::Job = {
        let response = upload(&server, "one.bmp", &image).await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    };
    assert_eq!(upload(&server, "two.bmp", &image).await.status(), 201);
    let busy = upload(&server, "three.bmp", &image).await;
    assert_eq!(busy.headers()["retry-after"], "10");
    let body = expect_error(busy, 503, "busy").await;
    assert!(body.message.contains("memory"), "{}", body.message);
    // Several at once: never more admitted than the budget holds.
    let names: Vec<String> = (0..4).map(|i| format!("burst-{i}.bmp")).collect();
    let burst = futures::future::join_all(names.iter().map(|name| upload(&server, name, &image))).await;
    assert!(burst.iter().all(|r| r.status() == 503), "{:?}", burst.iter().map(|r| r.status()).collect::<Vec<_>>());
    // Once both decoded images are let go, a small job fits (it could not
    // while either was held: 120 - 60 - 41 < 34).
    eventually("the decoded images' memory to come back", std::time::Duration::from_secs(10), || async {
        (upload(&server, "small.bmp", &small).await.status() == 201).then_some(())
    })
    .await;
    expect_error(upload(&server, "small-2.bmp", &small).await, 503, "busy").await;

    // An image the whole budget could not hold is refused for good.
    let huge =
        expect_error(upload(&server, "huge.bmp", &bmp_header_only(8000, 8000)).await, 413, "image_too_large").await;
    assert!(huge.message.contains("TILEPIPE_MEMORY_BUDGET"), "{}", huge.message);

    // A stopped job gives its share back.
    let cancelled = reqwest::Client::new().post(server.url(&format!("/api/jobs/{}/cancel", first.id))).send().await;
    assert!(cancelled.unwrap().status().is_success());
    eventually("the cancelled job's memory to come back", std::time::Duration::from_secs(10), || async {
        (upload(&server, "small-2.bmp", &small).await.status() == 201).then_some(())
    })
    .await;

    // Restarted, the running jobs resume holding their shares before the
    // server takes an upload: a new one still finds the memory taken.
    let server = server.restart_with(&broker, budget).await;
    let body = expect_error(upload(&server, "four.bmp", &image).await, 503, "busy").await;
    assert!(body.message.contains("memory"), "{}", body.message);
    server.stop().await;
}
