//! `tilepipe`: the command line of a tilepipe server.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod client;
mod submit;
mod view;

#[derive(Parser)]
#[command(name = "tilepipe", version, about = "Process images on a tilepipe cluster from the command line")]
struct Cli {
    /// The server's address.
    #[arg(long, global = true, env = "TILEPIPE_SERVER", default_value = "http://127.0.0.1:3000")]
    server: String,

    /// The server's access token, if it wants one.
    #[arg(long, global = true, env = "TILEPIPE_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Print JSON (one object per line) instead of text, for scripts.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Upload images (files or folders) and write each result as it finishes.
    /// Files whose result exists are skipped; exits 1 if any file failed.
    Submit(submit::Args),
    /// The newest jobs.
    Jobs,
    /// The workers the server has heard from.
    Workers,
    /// Stop a queued or running job.
    Cancel {
        /// The job's id.
        id: String,
    },
    /// A live view of workers and jobs (Ctrl-C to leave).
    Watch,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = client::Client::new(&cli.server, cli.token);
    let json = cli.json;
    let print = |value: &dyn erased::Json, text: String| {
        if json { println!("{}", value.json()) } else { print!("{text}") }
    };
    match cli.command {
        Command::Submit(args) => {
            let outcomes = submit::run(&client, args, json).await?;
            let failed = outcomes.iter().any(|o| o.status == submit::Status::Failed);
            return Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS });
        }
        Command::Jobs => {
            let jobs = client.jobs().await?;
            print(&jobs, view::jobs_table(&jobs));
        }
        Command::Workers => {
            let workers = client.workers().await?;
            print(&workers, view::workers_table(&workers));
        }
        Command::Cancel { id } => {
            let job = client.cancel(&id).await?;
            print(&job, format!("{} {}\n", job.id, job.status.as_str()));
        }
        Command::Watch => view::watch(&client).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Printing any serialisable answer as one JSON line.
mod erased {
    pub trait Json {
        fn json(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).expect("API types serialise")
        }
    }
}
