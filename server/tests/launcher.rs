//! `scripts/run.sh` keeps workers up: `supervise` (scripts/lib.sh) starts a
//! command again when it dies, waiting longer each time, and TERM stops it
//! and the command.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it holds, failing after `deadline`.
fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alive(pid: &str) -> bool {
    Command::new("kill").args(["-0", pid]).stderr(Stdio::null()).status().unwrap().success()
}

#[test]
fn a_dying_command_is_started_again_and_stops_with_its_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // Dies at once the first time; the second time it stays up.
    let command = r#"echo $$ >> "$RUNS"; [ "$(wc -l < "$RUNS")" -ge 2 ] && exec sleep 1000; exit 3"#;
    let mut supervisor = Command::new("bash")
        .args(["-c", &format!("source scripts/lib.sh; supervise crasher sh -c '{command}'")])
        .current_dir(root)
        .env("RUNS", &runs)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pids = || std::fs::read_to_string(&runs).unwrap_or_default().lines().map(str::to_owned).collect::<Vec<_>>();
    wait_until("the command to run twice", Duration::from_secs(20), || pids().len() >= 2);
    let second = pids()[1].clone();
    assert!(alive(&second));

    let term = Command::new("kill").args(["-TERM", &supervisor.id().to_string()]).status().unwrap();
    assert!(term.success());
    let mut exited = None;
    wait_until("the supervisor to exit", Duration::from_secs(20), || {
        exited = supervisor.try_wait().unwrap();
        exited.is_some()
    });
    assert!(exited.unwrap().success());
    wait_until("the command to stop with it", Duration::from_secs(20), || !alive(&second));
    let mut said = String::new();
    supervisor.stdout.take().unwrap().read_to_string(&mut said).unwrap();
    assert!(said.contains("crasher exited with status 3; starting it again in 1s"), "{said}");
    assert_eq!(pids().len(), 2, "started again after TERM");
}
