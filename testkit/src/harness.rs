//! A server and workers running in the test's own process.

use std::net::SocketAddr;

use app::api::Job;
use tokio_util::sync::CancellationToken;

use crate::{Api, Broker};

/// A server running in this process on a free port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub data: tempfile::TempDir,
    pub prefix: String,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    pub async fn start(broker: &Broker, prefix: &str) -> Self {
        Self::start_with(broker, prefix, |_| {}).await
    }

    /// Starts a server whose config `tweak` may change first.
    pub async fn start_with(broker: &Broker, prefix: &str, tweak: impl FnOnce(&mut server::Config)) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), broker, prefix, tweak).await
    }

    /// Stops this server and starts a new one on the same data directory.
    pub async fn restart(self, broker: &Broker) -> Self {
        self.restart_with(broker, |_| {}).await
    }

    /// Stops this server and starts a new one on the same data directory,
    /// whose config `tweak` may change first.
    pub async fn restart_with(self, broker: &Broker, tweak: impl FnOnce(&mut server::Config)) -> Self {
        let (data, prefix) = (self.data, self.prefix);
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
        Self::start_in(data, broker, &prefix, tweak).await
    }

    async fn start_in(
        data: tempfile::TempDir,
        broker: &Broker,
        prefix: &str,
        tweak: impl FnOnce(&mut server::Config),
    ) -> Self {
        let mut config = server::Config::defaults();
        config.addr = "127.0.0.1:0".parse().unwrap();
        config.data_dir = data.path().to_owned();
        config.brokers = broker.addr.clone();
        config.topic_prefix = prefix.to_owned();
        config.task_partitions = 4;
        tweak(&mut config);
        let options = server::leptos_options(config.addr).unwrap();
        let server = server::Server::start(config, options).await.expect("server starts");
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        let handle = tokio::spawn(server.serve(async move { signal.cancelled().await }));
        Self { addr, base: format!("http://{addr}"), data, prefix: prefix.to_owned(), shutdown, handle }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn api(&self) -> Api {
        Api { base: self.base.clone() }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }

    pub async fn job(&self, id: &str) -> Job {
        self.api().job(id).await
    }

    pub async fn upload(&self, name: &str, bytes: Vec<u8>) -> reqwest::Response {
        self.api().upload(name, bytes).await
    }
}

/// A worker running in this process.
pub struct TestWorker {
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestWorker {
    pub fn start(broker: &Broker, prefix: &str, id: &str) -> Self {
        let config = worker::Config {
            brokers: broker.addr.clone(),
            topic_prefix: prefix.to_owned(),
            worker_id: Some(id.to_owned()),
            heartbeat_secs: 1,
            session_timeout_ms: 6_000,
        };
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(worker::run(config, shutdown.clone()));
        Self { shutdown, handle }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}
