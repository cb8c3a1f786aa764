//! What reading an upload's header costs, measured as this process's peak
//! memory: alone in its test binary, so no other test moves the peak.

use testkit::{icc_profile, png_header_only, png_header_with};

/// Peak resident memory of this process so far, in bytes (Linux).
fn peak_memory() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn a_header_with_an_icc_profile_bomb_costs_a_bounded_amount_of_memory() {
    let limits = server::Config::defaults().limits();
    // Made before measuring; streamed, so making it costs little itself.
    let bomb = png_header_with(1100, 1024, &[(b"iCCP", &icc_profile(512 << 20))]);
    assert!(bomb.len() < 4 << 20, "{} bytes", bomb.len());
    let before = peak_memory();
    // The profile is dropped (tilepipe does no colour management); the header reads.
    let info = server::intake::inspect(&bomb, limits).expect("the header is readable");
    let grown = peak_memory().saturating_sub(before);
    assert_eq!((info.width, info.height), (1100, 1024));
    assert!(grown < 2 * server::intake::HEADER_MEMORY, "reading the header took {} MiB", grown >> 20);

    // A profile of a real size, and the header of a large image, read as before.
    let profiled = png_header_with(1100, 1024, &[(b"iCCP", &icc_profile(500_000))]);
    assert_eq!(server::intake::inspect(&profiled, limits).map(|i| i.width).ok(), Some(1100));
    let large = server::intake::inspect(&png_header_only(16_000, 16_000), limits);
    assert_eq!(large.map(|i| i.height).ok(), Some(16_000));
}
