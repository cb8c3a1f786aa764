//! The optional access token: mutations need it, reads need it only when
//! asked to, and health and metrics stay open.

use app::api::ApiError;
use pipeline::Operation;
use testkit::*;

const TOKEN: &str = "s3cret+token";

async fn refused(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    response.json::<ApiError>().await.unwrap().error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_mutation_but_not_reads() {
    let broker = Broker::start();
    let server = TestServer::start_with(&broker, &unique_prefix("auth"), |c| c.token = Some(TOKEN.into())).await;
    let client = reqwest::Client::new();
    let form = || {
        let part = reqwest::multipart::Part::bytes(png(&test_image(1024, 1024))).file_name("a.png");
        reqwest::multipart::Form::new().part("image", part)
    };

    let anonymous = client.post(server.url("/api/jobs")).multipart(form()).send().await.unwrap();
    assert_eq!(refused(anonymous).await, "unauthorized");
    let wrong = client.post(server.url("/api/jobs")).bearer_auth("guess").multipart(form()).send().await.unwrap();
    assert_eq!(refused(wrong).await, "unauthorized");
    let created = client.post(server.url("/api/jobs")).bearer_auth(TOKEN).multipart(form()).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let job: app::api::Job = created.json().await.unwrap();

    let cancel = format!("/api/jobs/{}/cancel", job.id);
    refused(client.post(server.url(&cancel)).send().await.unwrap()).await;
    refused(client.delete(server.url(&format!("/api/jobs/{}", job.id))).send().await.unwrap()).await;
    assert_eq!(client.post(server.url(&cancel)).bearer_auth(TOKEN).send().await.unwrap().status(), 200);
    refused(client.post(server.url(&format!("/api/jobs/{}/retry", job.id))).send().await.unwrap()).await;

    // Batches follow the same rules.
    refused(client.post(server.url("/api/batches")).send().await.unwrap()).await;
    let batch: app::api::Batch =
        client.post(server.url("/api/batches")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    refused(client.delete(server.url(&format!("/api/batches/{}", batch.id))).send().await.unwrap()).await;
    for path in [format!("/api/batches/{}", batch.id), format!("/api/batches/{}/results.zip", batch.id)] {
        assert_eq!(reqwest::get(server.url(&path)).await.unwrap().status(), 200, "{path}");
    }

    // Reads are open by default.
    for path in ["/api/jobs", "/api/workers", "/api/stats", "/healthz", "/metrics"] {
        assert_eq!(reqwest::get(server.url(path)).await.unwrap().status(), 200, "{path}");
    }
    assert_eq!(server.job(&job.id).await.ops, [Operation::default()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_reads_take_the_token_as_a_header_or_for_the_stream_a_query() {
    let broker = Broker::start();
    let server = TestServer::start_with(&broker, &unique_prefix("auth-reads"), |c| {
        c.token = Some(TOKEN.into());
        c.protect_reads = true;
    })
    .await;
    let client = reqwest::Client::new();
    refused(reqwest::get(server.url("/api/jobs")).await.unwrap()).await;
    refused(reqwest::get(server.url("/api/events")).await.unwrap()).await;
    refused(reqwest::get(server.url("/api/batches/00000000-0000-0000-0000-000000000000")).await.unwrap()).await;
    assert_eq!(client.get(server.url("/api/jobs")).bearer_auth(TOKEN).send().await.unwrap().status(), 200);
    let stream = reqwest::get(server.url("/api/events?token=s3cret%2Btoken")).await.unwrap();
    assert_eq!(
        (stream.status().as_u16(), stream.headers()["content-type"].to_str().unwrap()),
        (200, "text/event-stream")
    );
    // A token in the query never authorises a mutation.
    let cancel = client.post(server.url("/api/jobs/00000000-0000-0000-0000-000000000000/cancel?token=s3cret%2Btoken"));
    refused(cancel.send().await.unwrap()).await;
    // Operators' endpoints stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(reqwest::get(server.url(path)).await.unwrap().status(), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_comes_from_a_file_and_only_the_event_stream_takes_it_in_the_query() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("  {TOKEN}\n")).unwrap();
    let server = TestServer::start_with(&broker, &unique_prefix("auth-file"), |c| {
        c.token_file = Some(file.clone());
        c.protect_reads = true;
    })
    .await;
    let client = reqwest::Client::new();
    assert_eq!(client.get(server.url("/api/jobs")).bearer_auth(TOKEN).send().await.unwrap().status(), 200);
    // A token in a URL ends up in logs and histories: only the stream, which cannot send headers, takes it.
    refused(reqwest::get(server.url("/api/jobs?token=s3cret%2Btoken")).await.unwrap()).await;
    refused(reqwest::get(server.url("/api/stats?token=s3cret%2Btoken")).await.unwrap()).await;
    assert_eq!(reqwest::get(server.url("/api/events?token=s3cret%2Btoken")).await.unwrap().status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_token_is_a_startup_error_not_an_open_door() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank");
    std::fs::write(&blank, "\n").unwrap();
    for (token, token_file) in [(Some(""), None), (Some("   "), None), (None, Some(blank))] {
        let mut config = server::Config::defaults();
        config.addr = "127.0.0.1:0".parse().unwrap();
        config.data_dir = dir.path().join("data");
        config.brokers = broker.addr.clone();
        config.topic_prefix = unique_prefix("auth-empty");
        (config.token, config.token_file) = (token.map(str::to_owned), token_file);
        let options = server::leptos_options(config.addr).unwrap();
        let error = server::Server::start(config, options).await.err().expect("the server started");
        assert!(format!("{error:#}").contains("empty"), "{error:#}");
    }
    let missing = server::Config { token_file: Some(dir.path().join("nope")), ..server::Config::defaults() };
    let error = server::Server::start(missing, server::leptos_options("127.0.0.1:0".parse().unwrap()).unwrap()).await;
    assert!(format!("{:#}", error.err().unwrap()).contains("token file"));
}
