//! `Config::defaults()` ignores the environment, which parsing honours.

use clap::Parser;
use server::Config;

const NAME: &str = "defaults_ignore_tilepipe_variables_that_parsing_honours";

#[test]
fn defaults_ignore_tilepipe_variables_that_parsing_honours() {
    if std::env::var_os("TILEPIPE_TEST_CHILD").is_some() {
        assert_eq!(Config::parse_from(["server"]).tile_size, 1024, "parsing reads the variable");
        assert_eq!(Config::defaults().tile_size, 512, "the defaults do not");
        return;
    }
    // Changing a running process's environment is unsafe (and forbidden
    // here): run this test again in a child process that starts with it.
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--test-threads=1"])
        .env("TILEPIPE_TEST_CHILD", "1")
        .env("TILEPIPE_TILE_SIZE", "1024")
        .output()
        .unwrap();
    let output = String::from_utf8_lossy(&child.stdout);
    assert!(child.status.success() && output.contains("1 passed"), "{output}");
}
