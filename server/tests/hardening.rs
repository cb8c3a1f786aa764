//! Hostile HTTP: other sites, other host names, malformed requests, header
//! bombs, slow and idle clients and floods get a JSON answer or a closed
//! socket, and the server keeps serving.

use std::time::Duration;

use app::api::ApiError;
use testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(30);

async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> ApiError {
    assert_eq!(response.status(), status, "{:?}", response.headers());
    let body: ApiError = response.json().await.expect("a JSON error body");
    assert_eq!(body.error, code, "message: {}", body.message);
    assert!(!body.message.is_empty());
    body
}

fn image_form() -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(png(&test_image(1024, 1024))).file_name("a.png");
    reqwest::multipart::Form::new().part("image", part)
}

async fn jobs(server: &TestServer) -> Vec<app::api::Job> {
    reqwest::get(server.url("/api/jobs")).await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_sites_and_other_host_names_are_refused() {
    let broker = Broker::start();
    let server = TestServer::start(&broker, &unique_prefix("origin")).await;
    let client = reqwest::Client::new();
    let post = || client.post(server.url("/api/jobs")).multipart(image_form());

    // A page on another site posting with the operator's browser.
    expect_error(post().header("Origin", "http://evil.example").send().await.unwrap(), 403, "cross_origin").await;
    expect_error(post().header("Referer", "http://evil.example/a").send().await.unwrap(), 403, "cross_origin").await;
    expect_error(post().header("Origin", "null").send().await.unwrap(), 403, "cross_origin").await;
    let other_port = format!("http://127.0.0.1:{}", server.addr.port() + 1);
    expect_error(post().header("Origin", other_port).send().await.unwrap(), 403, "cross_origin").await;
    // DNS rebinding: a hostile name resolving to this server, read or write.
    let rebound = client.get(server.url("/api/jobs")).header("Host", "evil.example:3000").send().await.unwrap();
    expect_error(rebound, 421, "unknown_host").await;
    expect_error(post().header("Host", "evil.example").send().await.unwrap(), 421, "unknown_host").await;
    assert!(jobs(&server).await.is_empty(), "a refused request created a job");

    // This server's own pages, and clients that are not browsers, go ahead.
    let own = post().header("Origin", server.base.clone()).send().await.unwrap();
    assert_eq!(own.status(), 201);
    assert_eq!(post().send().await.unwrap().status(), 201);
    let named = client.get(server.url("/api/jobs")).header("Host", format!("localhost:{}", server.addr.port()));
    assert_eq!(named.send().await.unwrap().status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_public_name_is_accepted_for_hosts_and_origins() {
    let broker = Broker::start();
    let server = TestServer::start_with(&broker, &unique_prefix("allowed-hosts"), |c| {
        c.allowed_hosts = vec!["tiles.example.com".into()];
    })
    .await;
    let client = reqwest::Client::new();
    let proxied = client.get(server.url("/api/jobs")).header("Host", "tiles.example.com").send().await.unwrap();
    assert_eq!(proxied.status(), 200);
    // A proxy that passes the public origin on to this server's own address.
    let post = client.post(server.url("/api/jobs")).header("Origin", "https://tiles.example.com");
    assert_eq!(post.multipart(image_form()).send().await.unwrap().status(), 201);
    let elsewhere = client.get(server.url("/api/jobs")).header("Host", "other.example.com").send().await.unwrap();
    expect_error(elsewhere, 421, "unknown_host").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_on_every_route_is_the_json_envelope() {
    let broker = Broker::start();
    let server = TestServer::start(&broker, &unique_prefix("envelope")).await;
    let client = reqwest::Client::new();
    let jobs_url = server.url("/api/jobs");

    for content_type in ["multipart/form-data", "multipart/form-data; boundary=", "text/plain", "application/json"] {
        let sent = client.post(&jobs_url).header("Content-Type", content_type).body(r#"{"a":1}"#).send().await;
        let body = expect_error(sent.unwrap(), 400, "bad_multipart").await;
        assert!(body.message.len() <= 500);
    }
    for method in [reqwest::Method::PUT, reqwest::Method::DELETE, reqwest::Method::PATCH] {
        let response = client.request(method.clone(), &jobs_url).send().await.unwrap();
        assert!(response.headers().contains_key("allow"), "{method}");
        expect_error(response, 405, "method_not_allowed").await;
    }
    // A path segment that is not UTF-8.
    expect_error(reqwest::get(server.url("/api/jobs/%FF%FE")).await.unwrap(), 400, "bad_request").await;
    expect_error(reqwest::get(server.url("/api/nowhere")).await.unwrap(), 404, "not_found").await;

    // Malformed ops are unprocessable, as documented, and long input is not echoed back.
    let form = image_form().text("ops", "[{\"op\": 3}]");
    expect_error(client.post(&jobs_url).multipart(form).send().await.unwrap(), 422, "invalid_ops").await;
    let long = format!("[{{\"op\":\"{}\"}}]", "x".repeat(1 << 20));
    let form = image_form().text("ops", long);
    let body = expect_error(client.post(&jobs_url).multipart(form).send().await.unwrap(), 422, "invalid_ops").await;
    assert!(body.message.len() <= 500, "{} bytes", body.message.len());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icc_profile_bombs_are_refused_while_health_checks_answer() {
    // A 256 MiB profile in a few hundred KB (see intake_memory.rs for what it costs).
    let bomb = png_header_with(1100, 1024, &[(b"iCCP", &icc_profile(256 << 20))]);
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());

    let broker = Broker::start();
    let server = TestServer::start(&broker, &unique_prefix("icc-bomb")).await;
    let bombs: Vec<_> = (0..10)
        .map(|i| {
            let (url, bomb) = (server.url("/api/jobs"), bomb.clone());
            tokio::spawn(async move {
                let part = reqwest::multipart::Part::bytes(bomb).file_name(format!("bomb-{i}.png"));
                reqwest::Client::new()
                    .post(url)
                    .multipart(reqwest::multipart::Form::new().part("image", part))
                    .send()
                    .await
            })
        })
        .collect();
    // Health checks keep answering while the bombs are refused.
    let health = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    while !bombs.iter().all(|b| b.is_finished()) {
        assert_eq!(health.get(server.url("/healthz")).send().await.unwrap().status(), 200);
    }
    for bomb in bombs {
        expect_error(bomb.await.unwrap().unwrap(), 422, "unreadable_image").await;
    }
    assert!(jobs(&server).await.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_cannot_slip_past_the_job_limit() {
    let broker = Broker::start();
    let server = TestServer::start_with(&broker, &unique_prefix("admission"), |c| c.max_active_jobs = 2).await;
    let image = png(&test_image(1024, 1024));
    let uploads: Vec<_> = (0..8)
        .map(|_| {
            let (url, image) = (server.url("/api/jobs"), image.clone());
            tokio::spawn(async move {
                let part = reqwest::multipart::Part::bytes(image).file_name("a.png");
                let form = reqwest::multipart::Form::new().part("image", part);
                reqwest::Client::new().post(url).multipart(form).send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for upload in uploads {
        statuses.push(upload.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [201, 201, 503, 503, 503, 503, 503, 503]);
    assert_eq!(jobs(&server).await.len(), 2);
    server.stop().await;
}

/// Reads from `stream` until the server closes it; false if it stays open past `deadline`.
async fn closed_by_server(stream: &mut tokio::net::TcpStream, deadline: Duration) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(deadline, stream.read_to_end(&mut sink)).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_dropped_and_event_streams_are_capped() {
    let broker = Broker::start();
    let server = TestServer::start_with(&broker, &unique_prefix("slow"), |c| {
        c.header_timeout_secs = 1;
        c.body_timeout_secs = 1;
        c.max_event_streams = 2;
    })
    .await;

    // Half a request head, then silence; and a connection that says nothing.
    let mut slowloris = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slowloris.write_all(b"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_by_server(&mut slowloris, DEADLINE).await, "a half-sent head was kept open");
    assert!(closed_by_server(&mut idle, DEADLINE).await, "an idle connection was kept open");

    // An upload that stops sending is abandoned with 408.
    let (status, body) = partial_upload(&server.base, 1 << 20, &[], 1000).await;
    assert_eq!(status, 408, "{body}");
    assert_eq!(serde_json::from_str::<ApiError>(&body).unwrap().error, "timeout");

    // A thousand idle connections do not stop normal requests.
    let mut crowd = Vec::new();
    for _ in 0..1000 {
        crowd.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(jobs(&server).await.len(), 0);
    drop(crowd);

    // Event streams are capped; a closed one frees its place.
    let first = reqwest::get(server.url("/api/events")).await.unwrap();
    let second = reqwest::get(server.url("/api/events")).await.unwrap();
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    expect_error(reqwest::get(server.url("/api/events")).await.unwrap(), 503, "busy").await;
    drop(first);
    eventually("a closed stream's place to be free", DEADLINE, || async {
        let third = reqwest::get(server.url("/api/events")).await.unwrap();
        (third.status() == 200).then_some(())
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_completes_with_dashboards_open() {
    let broker = Broker::start();
    let server = TestServer::start_with(&broker, &unique_prefix("shutdown"), |c| c.shutdown_timeout_secs = 60).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let stream = reqwest::get(server.url("/api/events")).await.unwrap();
        assert_eq!(stream.status(), 200);
        streams.push(stream);
    }
    // Well within the shutdown timeout: the streams end rather than hold it up.
    tokio::time::timeout(Duration::from_secs(20), server.stop()).await.expect("shutdown waited on event streams");
    for mut stream in streams {
        let ended = tokio::time::timeout(DEADLINE, async { while let Ok(Some(_)) = stream.chunk().await {} });
        ended.await.expect("an event stream outlived the server");
    }
}
