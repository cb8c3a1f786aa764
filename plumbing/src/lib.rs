//! What the master and the workers share besides the pipeline: Kafka client
//! settings, a consumer context that logs, shutdown on a signal, the wall
//! clock and the log setup. `pipeline` stays pure; this crate does the I/O.

pub mod kafka;

use std::time::Duration;

/// Milliseconds since the Unix epoch by the wall clock (0 if it is set
/// before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The time `ago` before now, in milliseconds since the epoch (as [`now_ms`]).
pub fn ms_ago(ago: Duration) -> i64 {
    now_ms().saturating_sub(i64::try_from(ago.as_millis()).unwrap_or(i64::MAX))
}

/// Completes on Ctrl-C or, on Unix, SIGTERM. A handler that cannot be
/// installed is skipped (the other still works), never a panic.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// Logs to stderr at the level `RUST_LOG` names (`info` by default).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_counts_milliseconds_since_the_epoch() {
        let (before, now) = (ms_ago(Duration::from_secs(60)), now_ms());
        // After 2020, and a minute ago is a minute before now.
        assert!(now > 1_577_836_800_000, "{now}");
        assert!((59_000..=61_000).contains(&(now - before)), "{before} {now}");
        assert_eq!(ms_ago(Duration::MAX), now_ms().saturating_sub(i64::MAX));
    }
}
