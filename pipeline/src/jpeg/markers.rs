//! A JPEG's marker segments, read up to its scan: the frame, the Huffman
//! tables, the restart interval and the segments every crop repeats.

use super::huffman::Decoder as HuffmanDecoder;
use super::{Component, Jpeg, JpegError, Tables};

/// Bytes of header segments a crop may repeat: four quantisation tables, a
/// JFIF header with a thumbnail and an Adobe marker fit several times over.
const MAX_KEPT: usize = 256 * 1024;

impl Jpeg {
    /// Reads the markers of a JPEG in memory; returns it and its scan.
    pub fn parse(bytes: &[u8]) -> Result<(Self, &[u8]), JpegError> {
        let mut rest = bytes;
        let jpeg = Self::read(&mut rest)?;
        Ok((jpeg, rest))
    }

    /// Reads the markers up to the start of the scan, where it leaves `source`.
    pub fn read(source: &mut impl std::io::Read) -> Result<Self, JpegError> {
        use JpegError::{Malformed, Unsupported};
        let mut byte = || {
            let mut b = [0];
            source.read_exact(&mut b).map(|()| b[0]).map_err(|_| Malformed("truncated marker segment"))
        };
        if (byte()?, byte()?) != (0xFF, 0xD8) {
            return Err(Malformed("no start-of-image marker"));
        }
        let (mut frame, mut kept) = (None, Vec::new());
        let (mut dc, mut ac): (Tables, Tables) = Default::default();
        let mut restart_interval = 0;
        loop {
            if byte()? != 0xFF {
                return Err(Malformed("expected a marker"));
            }
            // Fill bytes (0xFF) may precede a marker.
            let mut marker = byte()?;
            while marker == 0xFF {
                marker = byte()?;
            }
            if matches!(marker, 0xD8 | 0xD9 | 0xD0..=0xD7 | 0x01 | 0x00) {
                return Err(Malformed("unexpected marker before the scan"));
            }
            let length = usize::from(u16::from_be_bytes([byte()?, byte()?]));
            if length < 2 {
                return Err(Malformed("marker segment shorter than its length field"));
            }
            // At most 64 KiB: a segment's length is 16 bits.
            let mut segment = vec![0xFF, marker, (length >> 8) as u8, length as u8];
            segment.resize(2 + length, 0);
            for b in &mut segment[4..] {
                *b = byte()?;
            }
            let body = &segment[4..];
            match marker {
                0xC0 | 0xC1 => frame = Some((marker, read_frame(body)?)),
                0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                    return Err(Unsupported("not a sequential Huffman JPEG (progressive, lossless or arithmetic)"));
                }
                0xC4 => read_huffman(body, &mut dc, &mut ac)?,
                0xDD => {
                    let ri = body.get(..2).ok_or(Malformed("short restart interval"))?;
                    restart_interval = u32::from(u16::from_be_bytes([ri[0], ri[1]]));
                }
                // Quantisation tables; JFIF and Adobe decide how the decoder
                // reads the colours.
                0xDB | 0xE0 | 0xEE => {
                    // Every crop repeats them: a file made of thousands must
                    // not cost thousands of segments per tile.
                    if kept.iter().map(Vec::len).sum::<usize>() + segment.len() > MAX_KEPT {
                        return Err(Unsupported("too many table and colour segments to repeat in every crop"));
                    }
                    kept.push(segment);
                }
                0xDA => {
                    let (sof, (width, height, mut components)) =
                        frame.ok_or(Malformed("scan before the frame header"))?;
                    read_scan(body, &mut components)?;
                    for c in &components {
                        if dc[usize::from(c.td)].is_none() || ac[usize::from(c.ta)].is_none() {
                            return Err(Malformed("a scan refers to a missing Huffman table"));
                        }
                    }
                    return Ok(Self { width, height, sof, components, kept, dc, ac, restart_interval });
                }
                _ => {} // other application data and comments: not needed
            }
        }
    }
}

fn read_frame(body: &[u8]) -> Result<(u32, u32, Vec<Component>), JpegError> {
    use JpegError::{Malformed, Unsupported};
    let &[precision, h0, h1, w0, w1, count, ..] = body else {
        return Err(Malformed("short frame header"));
    };
    if precision != 8 {
        return Err(Unsupported("not 8-bit samples"));
    }
    let (height, width) = (u32::from(u16::from_be_bytes([h0, h1])), u32::from(u16::from_be_bytes([w0, w1])));
    if width == 0 || height == 0 {
        return Err(Unsupported("no height in the frame header (defined later by a DNL marker)"));
    }
    if count != 1 && count != 3 {
        return Err(Unsupported("neither grey nor three-component colour"));
    }
    let specs = body.get(6..6 + 3 * usize::from(count)).ok_or(Malformed("short frame header"))?;
    let components: Vec<Component> = specs
        .chunks_exact(3)
        .map(|s| Component { id: s[0], h: s[1] >> 4, v: s[1] & 15, tq: s[2], td: 0, ta: 0 })
        .collect();
    if components.iter().any(|c| !(1..=4).contains(&c.h) || !(1..=4).contains(&c.v) || c.tq > 3) {
        return Err(Malformed("bad sampling factors or table number"));
    }
    if count == 1 && (components[0].h, components[0].v) != (1, 1) {
        return Err(Unsupported("a grey image with sampling factors"));
    }
    let (hmax, vmax) = (components.iter().map(|c| c.h).max(), components.iter().map(|c| c.v).max());
    if components.iter().any(|c| hmax.is_some_and(|m| m % c.h != 0) || vmax.is_some_and(|m| m % c.v != 0)) {
        return Err(Unsupported("fractional chroma sampling"));
    }
    Ok((width, height, components))
}

fn read_huffman(mut body: &[u8], dc: &mut Tables, ac: &mut Tables) -> Result<(), JpegError> {
    while !body.is_empty() {
        let (class, id) = (body[0] >> 4, usize::from(body[0] & 15));
        let counts: [u8; 16] = body.get(1..17).ok_or(JpegError::Malformed("short Huffman table"))?.try_into().unwrap();
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        let values = body.get(17..17 + total).ok_or(JpegError::Malformed("short Huffman table"))?;
        let table = HuffmanDecoder::shared(&counts, values)?;
        match (class, id) {
            (0, 0..=3) => dc[id] = Some(table),
            (1, 0..=3) => ac[id] = Some(table),
            _ => return Err(JpegError::Malformed("bad Huffman table class or number")),
        }
        body = &body[17 + total..];
    }
    Ok(())
}

fn read_scan(body: &[u8], components: &mut [Component]) -> Result<(), JpegError> {
    let count = usize::from(*body.first().ok_or(JpegError::Malformed("short scan header"))?);
    if count != components.len() {
        return Err(JpegError::Unsupported("the components are in separate scans"));
    }
    let specs = body.get(1..1 + 2 * count).ok_or(JpegError::Malformed("short scan header"))?;
    for (spec, c) in specs.chunks_exact(2).zip(components.iter_mut()) {
        if spec[0] != c.id {
            return Err(JpegError::Unsupported("scan components in another order than the frame's"));
        }
        (c.td, c.ta) = (spec[1] >> 4, spec[1] & 15);
        if c.td > 3 || c.ta > 3 {
            return Err(JpegError::Malformed("bad Huffman table number"));
        }
    }
    match body.get(1 + 2 * count..4 + 2 * count) {
        Some([0, 63, 0]) => Ok(()),
        Some(_) => Err(JpegError::Unsupported("not a full-spectrum sequential scan")),
        None => Err(JpegError::Malformed("short scan header")),
    }
}
