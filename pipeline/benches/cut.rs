//! What the master spends cutting a JPEG upload into its tiles' tasks: one
//! pass over the scan that copies each crop's bits (see `Jpeg::split`),
//! with the halo of one 51x51 blur and of three.
//!
//! `cargo bench -p pipeline --bench cut` (release). `BENCH_SIZE` changes
//! the image edge (default 8192); the input is the one `scripts/bench.sh`
//! uploads (photo-like, q90, 4:2:0). Prints a Markdown table.

mod common;

use std::hint::black_box;

use pipeline::jpeg::{Jpeg, McuRect};
use pipeline::ops::{self, Operation};
use pipeline::{Frame, TileGrid};

use common::best;

const TILE: u32 = 512;

/// Cuts every tile of `grid` with `halo` out of `jpeg`; the crops' bytes.
fn cut(jpeg: &[u8], grid: TileGrid, halo: u32) -> usize {
    let mut file = jpeg;
    let parsed = Jpeg::read(&mut file).expect("a JPEG");
    let layout = parsed.layout();
    let wanted: Vec<McuRect> = grid.tiles().map(|(_, rect)| layout.covering_tile(rect, halo)).collect();
    let mut bytes = 0;
    parsed
        .split(file, &wanted, |_, crop| {
            bytes += crop.bytes.len();
            true
        })
        .expect("the split");
    bytes
}

fn main() {
    let size: u32 = std::env::var("BENCH_SIZE").ok().and_then(|s| s.parse().ok()).unwrap_or(8192);
    let image = Frame::photo_like(size, size);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode(&image.pixels, size, size, image::ExtendedColorType::Rgb8)
        .expect("the input codes");
    drop(image);
    let grid = TileGrid::new(size, size, TILE);
    let mb = jpeg.len() as f64 / 1e6;
    println!("{size}x{size} JPEG of {mb:.1} MB (q90, 4:2:0), {} tiles of {TILE} px; 1 thread\n", grid.len());
    println!("| halo | crops MB | s | MB/s of input |");
    println!("|---|---:|---:|---:|");
    for blurs in [1, 3] {
        let halo = ops::chain_halo(&vec![Operation::default(); blurs]);
        let mut crops = 0;
        let d = best(5, || crops = black_box(cut(&jpeg, grid, halo)));
        println!(
            "| {halo} px ({blurs} blur{}) | {:.1} | {:.3} | {:.0} |",
            if blurs > 1 { "s" } else { "" },
            crops as f64 / 1e6,
            d.as_secs_f64(),
            mb / d.as_secs_f64()
        );
    }
}
