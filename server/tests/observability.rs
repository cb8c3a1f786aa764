//! `/healthz`, `/readyz` and `/metrics` against a real system.

use std::time::Duration;

use pipeline::Operation;
use testkit::*;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let broker = Broker::start();
    let prefix = unique_prefix("metrics");
    let server = TestServer::start(&broker, &prefix).await;
    let worker = TestWorker::start(&broker, &prefix, "counted");
    let api = server.api();
    let image = test_image(1024, 1024);
    let job = api.submit(&image, &[Operation::Invert]).await;
    api.assert_exact(&api.finished(&job.id, Duration::from_secs(120)).await, &image, &[Operation::Invert]).await;
    let _stream = record_events(&server, |_| false).await;

    let text = eventually("the worker's heartbeat to count its tiles", Duration::from_secs(30), || async {
        let response = reqwest::get(server.url("/metrics")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
        let text = response.text().await.unwrap();
        text.contains(r#"tilepipe_worker_tiles_done{worker="counted"} 4"#).then_some(text)
    })
    .await;
    assert_eq!(metric(&text, "tilepipe_tiles_done_total"), 4.0);
    assert_eq!(metric(&text, "tilepipe_tile_processing_seconds_count"), 4.0);
    assert_eq!(metric(&text, r#"tilepipe_jobs{status="done"}"#), 1.0);
    assert_eq!(metric(&text, r#"tilepipe_jobs{status="running"}"#), 0.0);
    assert_eq!(metric(&text, r#"tilepipe_workers{status="alive"}"#), 1.0);
    assert_eq!(metric(&text, "tilepipe_queued_tiles"), 0.0);
    assert_eq!(metric(&text, "tilepipe_sse_clients"), 1.0);
    assert_eq!(metric(&text, "tilepipe_tiles_retried_total"), 0.0);
    assert_eq!(metric(&text, "tilepipe_upload_bytes_total"), job.input_bytes as f64);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_broker() {
    let mut broker = Broker::start();
    let server = TestServer::start(&broker, &unique_prefix("ready")).await;

    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!((health.status().as_u16(), health.text().await.unwrap().as_str()), (200, "ok\n"));
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"ready": true, "database": "ok", "broker": "ok"}));

    broker.kill();
    let body = eventually("readiness to notice the broker is gone", Duration::from_secs(30), || async {
        let ready = reqwest::get(server.url("/readyz")).await.unwrap();
        (ready.status() == 503).then_some(ready)
    })
    .await
    .json::<serde_json::Value>()
    .await
    .unwrap();
    assert_eq!((body["ready"].as_bool(), body["database"].as_str()), (Some(false), Some("ok")));
    assert_ne!(body["broker"], "ok");
    // The process itself is still healthy.
    assert_eq!(reqwest::get(server.url("/healthz")).await.unwrap().status(), 200);
}
