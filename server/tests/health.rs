//! Workers' health as the dashboard sees it: alive, lost after silence, and
//! alive again, each change pushed on the event stream.

use std::time::Duration;

use app::api::{Event, WorkerStatus};
use testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_turns_lost_then_alive_again_on_the_event_stream() {
    let broker = Broker::start();
    let prefix = unique_prefix("health");
    let server = TestServer::start_with(&broker, &prefix, |c| c.worker_timeout_secs = 2).await;
    let is = |status| move |e: &Event| matches!(e, Event::Worker(w) if w.id == "flaky" && w.status == status);

    let alive = record_events(&server, is(WorkerStatus::Alive)).await;
    let worker = TestWorker::start(&broker, &prefix, "flaky");
    let first = tokio::time::timeout(Duration::from_secs(60), alive).await.unwrap().unwrap();
    let Some(Event::Worker(w)) = first.last() else { panic!("no worker event") };
    assert_eq!((w.current_tile.as_deref(), w.pid), (None, std::process::id()), "idle, in this process");

    let lost = record_events(&server, is(WorkerStatus::Lost)).await;
    worker.stop().await;
    tokio::time::timeout(Duration::from_secs(60), lost).await.unwrap().unwrap();
    let workers: Vec<app::api::Worker> = reqwest::get(server.url("/api/workers")).await.unwrap().json().await.unwrap();
    assert_eq!(workers.iter().find(|w| w.id == "flaky").unwrap().status, WorkerStatus::Lost);

    let back = record_events(&server, is(WorkerStatus::Alive)).await;
    let worker = TestWorker::start(&broker, &prefix, "flaky");
    tokio::time::timeout(Duration::from_secs(60), back).await.unwrap().unwrap();
    worker.stop().await;
}
