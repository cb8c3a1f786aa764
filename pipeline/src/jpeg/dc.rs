//! A baseline JPEG at an eighth of its size, from its DC coefficients alone:
//! each 8x8 block's mean is its DC times its quantiser, over 8, plus 128.
//! One pass over the scan's entropy coding, with no inverse DCT and no
//! upsampling filter: what a preview of a huge JPEG costs.

use super::{Jpeg, JpegError, Row, ScanReader};

impl Jpeg {
    /// Gives `row` each row of the image at an eighth of its size (rounded
    /// up), as 8-bit RGB: `width.div_ceil(8)` pixels. Grey and YCbCr (or
    /// Adobe RGB) JPEGs; not CMYK.
    pub fn dc_rows(&self, scan: impl std::io::Read, mut row: impl FnMut(&[u8])) -> Result<(), JpegError> {
        let n = self.components.len();
        let rgb = match n {
            1 => false,
            3 => self.adobe_transform() == Some(0),
            _ => return Err(JpegError::Unsupported("a preview of a JPEG that is not grey or three-component")),
        };
        let quantisers: Vec<f32> = self.quantisation()?.iter().map(|q| f32::from(q[0])).collect();
        let layout = self.layout();
        let (cols, rows) = layout.mcus();
        let (h_max, v_max) = (layout.mcu_width / 8, layout.mcu_height / 8);
        let (width, height) = (self.width.div_ceil(8), self.height.div_ceil(8));
        let mut reader = ScanReader::new(self, scan, false);
        let mut out = Vec::with_capacity(width as usize * 3);
        for my in 0..rows {
            let Row::Blocks(blocks) = reader.row(cols)? else { unreachable!("a reader that keeps blocks") };
            for by in 0..v_max {
                if my * v_max + by >= height {
                    break;
                }
                out.clear();
                for x in 0..width {
                    // Each component's block over this spot (chroma blocks cover several).
                    let mut value = [0f32; 3];
                    for (ci, c) in self.components.iter().enumerate() {
                        let (h, v) = (u32::from(c.h), u32::from(c.v));
                        let per_row = cols * h;
                        let (bx, row_in_mcu) = (x * h / h_max, by * v / v_max);
                        let block = &blocks[ci][(row_in_mcu * per_row + bx) as usize];
                        value[ci] = f32::from(block[0]) * quantisers[ci] / 8.0 + 128.0;
                    }
                    let pixel = match (n, rgb) {
                        (1, _) => [value[0]; 3],
                        (_, true) => value,
                        _ => {
                            let (y, cb, cr) = (value[0], value[1] - 128.0, value[2] - 128.0);
                            [y + 1.402 * cr, y - 0.344_136 * cb - 0.714_136 * cr, y + 1.772 * cb]
                        }
                    };
                    out.extend(pixel.map(|v| v.round().clamp(0.0, 255.0) as u8));
                }
                row(&out);
            }
        }
        Ok(())
    }

    /// The Adobe marker's colour transform (0: none, RGB), if it has one.
    fn adobe_transform(&self) -> Option<u8> {
        self.kept.iter().find(|s| s[1] == 0xEE && s.get(4..9) == Some(b"Adobe")).and_then(|s| s.get(15).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flat regions of colour (8x8 blocks, or 16x16 where chroma is
    /// subsampled 2x2): a DC preview gives each block its region's colour.
    #[test]
    fn each_pixel_is_its_blocks_mean() {
        use jpeg_encoder::SamplingFactor;
        let (w, h) = (48u32, 32u32);
        let colour = |rx: u32, ry: u32| [(rx * 50) as u8, (ry * 80) as u8, 200 - (rx * 30) as u8];
        for (sampling, region) in [(SamplingFactor::F_1_1, 8), (SamplingFactor::F_2_2, 16)] {
            let pixels: Vec<u8> =
                (0..h).flat_map(|y| (0..w).flat_map(move |x| colour(x / region, y / region))).collect();
            let mut bytes = Vec::new();
            let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 100);
            encoder.set_sampling_factor(sampling);
            encoder.encode(&pixels, w as u16, h as u16, jpeg_encoder::ColorType::Rgb).unwrap();
            let (jpeg, scan) = Jpeg::parse(&bytes).unwrap();
            let mut rows = Vec::new();
            jpeg.dc_rows(scan, |r| rows.push(r.to_vec())).unwrap();
            assert_eq!(rows.len(), 4);
            for (by, r) in rows.iter().enumerate() {
                assert_eq!(r.len(), 6 * 3);
                for bx in 0..6u32 {
                    let want = colour(bx * 8 / region, by as u32 * 8 / region);
                    let got = &r[bx as usize * 3..bx as usize * 3 + 3];
                    for c in 0..3 {
                        let d = (i32::from(got[c]) - i32::from(want[c])).abs();
                        assert!(d <= 3, "{sampling:?} block ({bx},{by}) {c}: {got:?} vs {want:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_cut_short_scan_is_malformed() {
        let mut bytes = Vec::new();
        jpeg_encoder::Encoder::new(&mut bytes, 90)
            .encode(&[100; 64 * 64 * 3], 64, 64, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        let (jpeg, scan) = Jpeg::parse(&bytes).unwrap();
        let cut = &scan[..scan.len() / 2];
        assert!(jpeg.dc_rows(cut, |_| {}).is_err());
    }
}
