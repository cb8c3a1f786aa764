use std::time::Duration;

use clap::Parser;
use server::{Config, Server};

fn main() -> anyhow::Result<()> {
    plumbing::init_tracing();
    let config = Config::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let served = runtime.block_on(async {
        let leptos_options = server::leptos_options(config.addr)?;
        let server = Server::start(config, leptos_options).await?;
        tracing::info!("listening on http://{}", server.local_addr());
        server.serve(plumbing::shutdown_signal()).await
    });
    // Consumers leave their groups on the way out, which needs the broker;
    // if it is gone, do not wait for it forever.
    runtime.shutdown_timeout(Duration::from_secs(10));
    served
}
