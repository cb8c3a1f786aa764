//! `cargo run -p conformance -- --worker "<command>"`: checks a worker
//! against docs/protocol.md and prints what to fix.

use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(name = "conformance", about = "Checks a tilepipe worker against the protocol (docs/protocol.md)")]
struct Args {
    /// The worker command, run with `sh -c`. It gets TILEPIPE_BROKERS,
    /// TILEPIPE_TOPIC_PREFIX, TILEPIPE_WORKER_ID and TILEPIPE_HEARTBEAT_SECS.
    #[arg(long)]
    worker: String,

    /// A Kafka broker to use (bootstrap servers); by default the kit starts
    /// nisshi from PATH on a free port.
    #[arg(long, env = "TILEPIPE_CONFORMANCE_BROKERS")]
    brokers: Option<String>,

    /// Seconds each phase may wait for the worker's replies.
    #[arg(long, default_value_t = 60)]
    deadline_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let args = Args::parse();
    let options = conformance::Options {
        worker: args.worker,
        brokers: args.brokers,
        deadline: Duration::from_secs(args.deadline_secs),
    };
    let report = conformance::run(options).await?;
    print!("{report}");
    Ok(if report.passed() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE })
}
