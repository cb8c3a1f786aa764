use clap::Parser;
use server::{Config, Server};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let config = Config::parse();
    let leptos_options = server::leptos_options(config.addr)?;
    let server = Server::start(config, leptos_options).await?;
    tracing::info!("listening on http://{}", server.local_addr());
    server.serve(server::shutdown_signal()).await
}
