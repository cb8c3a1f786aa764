//! What the master spends on a JPEG result: checking each worker's JPEG
//! tile as it arrives, then joining the tiles into the result, with the
//! index the check keeps (the bits are copied) and without it (the scan is
//! decoded again to find them).
//!
//! `cargo bench -p pipeline --bench join` (release). `BENCH_SIZE` changes
//! the image edge (default 8192); the tiles are 512 px of blurred noise at
//! q90, as a 51x51 blur's result tiles are. Prints a Markdown table.

mod common;

use std::hint::black_box;

use pipeline::jpeg::{Splice, check_tile, encode_tile};
use pipeline::ops::{self, Operation};
use pipeline::{Channels, Frame, TileGrid};

use common::best;

const TILE: u32 = 512;
const QUALITY: u8 = 90;

/// The result tiles of a 51x51 blur of noise, as workers code them.
fn result_tiles(grid: TileGrid) -> Vec<Vec<u8>> {
    let image = Frame::noise(grid.width, grid.height, Channels::Rgb, 0x2545_F491_4F6C_DD1D);
    let chain = [Operation::default()];
    let halo = ops::chain_halo(&chain);
    let tiles: Vec<_> = grid.tiles().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = tiles.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = tiles
            .chunks(chunk)
            .map(|part| {
                let (image, chain) = (&image, &chain);
                s.spawn(move || {
                    part.iter()
                        .map(|&(_, rect)| {
                            let out = ops::process_tile(chain, image.crop_with_halo(rect, halo), halo);
                            encode_tile(&out, QUALITY).expect("a tile codes")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a coding thread")).collect()
    })
}

fn join(grid: TileGrid, tiles: &[Vec<u8>]) -> usize {
    let mut splice = Splice::new(grid, QUALITY).expect("a splice");
    let mut bytes = splice.header().len();
    for row in tiles.chunks(grid.columns() as usize) {
        bytes += splice.band(row).expect("a band").len();
    }
    bytes + splice.finish().expect("the end").len()
}

fn main() {
    let size: u32 = std::env::var("BENCH_SIZE").ok().and_then(|s| s.parse().ok()).unwrap_or(8192);
    let grid = TileGrid::new(size, size, TILE);
    let tiles = result_tiles(grid);
    let total: usize = tiles.iter().map(Vec::len).sum();
    let size_of = |t: u32| grid.tile(t).map(|r| (r.width, r.height)).expect("in the grid");
    let indexed: Vec<Vec<u8>> = tiles
        .iter()
        .enumerate()
        .map(|(t, tile)| {
            let mut stored = tile.clone();
            check_tile(tile, size_of(t as u32), QUALITY).expect("a good tile").append_to(&mut stored);
            stored
        })
        .collect();
    assert_eq!(join(grid, &tiles), join(grid, &indexed), "both joins give the same file");

    let check = best(5, || {
        for (t, tile) in tiles.iter().enumerate() {
            black_box(check_tile(tile, size_of(t as u32), QUALITY).expect("a good tile"));
        }
    });
    let decoded = best(5, || {
        black_box(join(grid, &tiles));
    });
    let copied = best(5, || {
        black_box(join(grid, &indexed));
    });

    let mb = total as f64 / 1e6;
    let index_bytes: usize = indexed.iter().map(Vec::len).sum::<usize>() - total;
    println!(
        "{size}x{size} result, {} tiles of {TILE} px at q{QUALITY}: {mb:.1} MB of JPEG tiles, {:.1} KB of indexes; 1 thread\n",
        tiles.len(),
        index_bytes as f64 / 1e3
    );
    println!("| pass over every tile | s | MB/s |");
    println!("|---|---:|---:|");
    for (name, d) in [
        ("check (on arrival; keeps the index)", check),
        ("join, decoding each scan again", decoded),
        ("join, copying by the index", copied),
    ] {
        println!("| {name} | {:.3} | {:.0} |", d.as_secs_f64(), mb / d.as_secs_f64());
    }
    let before = check + decoded;
    let after = check + copied;
    println!(
        "\ncheck and join: {:.3} s decoding again, {:.3} s copying by the index: {:.2}x less time",
        before.as_secs_f64(),
        after.as_secs_f64(),
        before.as_secs_f64() / after.as_secs_f64()
    );
}
