use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

// Tiles allocate and free megabyte buffers; mimalloc reuses them instead of
// paying fresh page faults for every tile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    plumbing::init_tracing();
    let config = worker::Config::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let ran = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            plumbing::shutdown_signal().await;
            on_signal.cancel();
        });
        worker::run(config, shutdown).await
    });
    // Leaving the group needs the broker; if it is gone, do not wait forever.
    runtime.shutdown_timeout(Duration::from_secs(10));
    ran
}
