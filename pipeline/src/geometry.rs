//! Tile geometry: how an image is cut into a grid of tiles.

use serde::{Deserialize, Serialize};

/// An axis-aligned rectangle in pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Self {
        Self { x, y, width, height }
    }

    pub const fn area(&self) -> u64 {
        self.width as u64 * self.height as u64
    }
}

/// The grid of tiles covering a `width` x `height` image with square tiles of
/// `tile_size`; tiles on the right and bottom edges are smaller when the image
/// size is not a multiple of the tile size. Tiles are numbered row by row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TileGrid {
    pub width: u32,
    pub height: u32,
    pub tile_size: u32,
}

impl TileGrid {
    /// # Panics
    /// If `tile_size` is zero.
    pub fn new(width: u32, height: u32, tile_size: u32) -> Self {
        assert!(tile_size > 0, "tile size must be positive");
        Self { width, height, tile_size }
    }

    pub fn columns(&self) -> u32 {
        self.width.div_ceil(self.tile_size)
    }

    pub fn rows(&self) -> u32 {
        self.height.div_ceil(self.tile_size)
    }

    pub fn len(&self) -> u32 {
        self.columns() * self.rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rectangle of tile `index`, or `None` past the last tile.
    pub fn tile(&self, index: u32) -> Option<Rect> {
        if index >= self.len() {
            return None;
        }
        let (col, row) = (index % self.columns(), index / self.columns());
        let (x, y) = (col * self.tile_size, row * self.tile_size);
        Some(Rect::new(x, y, self.tile_size.min(self.width - x), self.tile_size.min(self.height - y)))
    }

    pub fn tiles(&self) -> impl Iterator<Item = (u32, Rect)> + '_ {
        (0..self.len()).map(|i| (i, self.tile(i).expect("index below len")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edge_tiles_are_smaller() {
        let grid = TileGrid::new(1536, 1100, 512);
        assert_eq!((grid.columns(), grid.rows(), grid.len()), (3, 3, 9));
        assert_eq!(grid.tile(0), Some(Rect::new(0, 0, 512, 512)));
        assert_eq!(grid.tile(8), Some(Rect::new(1024, 1024, 512, 76)));
        assert_eq!(grid.tile(9), None);
    }

    proptest! {
        #[test]
        fn tiles_cover_every_pixel_exactly_once(w in 1u32..300, h in 1u32..300, t in 1u32..130) {
            let grid = TileGrid::new(w, h, t);
            let mut hits = vec![0u8; (w * h) as usize];
            for (_, r) in grid.tiles() {
                prop_assert!(r.width > 0 && r.height > 0);
                prop_assert!(r.width <= t && r.height <= t);
                for y in r.y..r.y + r.height {
                    for x in r.x..r.x + r.width {
                        hits[(y * w + x) as usize] += 1;
                    }
                }
            }
            prop_assert!(hits.iter().all(|&n| n == 1));
        }
    }
}
