//! The scan's entropy-coded bits: read MCU row by MCU row (as coefficients,
//! or as where each MCU's bits lie), and written again.

use super::bits::{BitReader, BitWriter};
use super::huffman::{Decoder as HuffmanDecoder, END, Encoder as HuffmanEncoder};
use super::{Block, Jpeg, JpegError, McuBits, McuRow, Row, Run};

/// Appends the bits of `run` as they were coded, but for the first DC
/// difference of each component: its predictor is now `predictors`' (one
/// per component), which are left as the run's last DC values.
pub(super) fn copy_run(
    writer: &mut BitWriter,
    run: &Run,
    predictors: &mut [i16],
    encoders: &[HuffmanEncoder; 4],
    tape: (&[u8], u64),
) {
    let n = predictors.len();
    for (ci, predictor) in predictors.iter_mut().enumerate() {
        let bits = &run.components[ci];
        let (size, extra) = magnitude(i32::from(bits.first_dc) - i32::from(*predictor));
        encoders[if ci == 0 { 0 } else { 2 }].put_with(writer, size, extra);
        let until = if ci + 1 < n { run.components[ci + 1].dc_at } else { run.end };
        writer.copy(tape, bits.ac_at, until);
        *predictor = bits.last_dc;
    }
}

/// Reads the scan MCU row by MCU row.
pub(super) struct ScanReader<'j, R> {
    jpeg: &'j Jpeg,
    pub(super) bits: BitReader<R>,
    pub(super) predictors: Vec<i16>,
    /// MCUs decoded since the last restart marker.
    since_restart: u32,
    /// Record where each MCU's bits lie instead of keeping coefficients.
    copy: bool,
}

impl<'j, R: std::io::Read> ScanReader<'j, R> {
    /// A reader that keeps each row's coefficients, or with `copy` only
    /// where each MCU's bits lie.
    pub(super) fn new(jpeg: &'j Jpeg, scan: R, copy: bool) -> Self {
        let bits = BitReader::new(scan);
        Self { jpeg, bits, predictors: vec![0; jpeg.components.len()], since_restart: 0, copy }
    }

    /// A reader that copies: where each MCU's bits lie, and the bits
    /// themselves (see [`BitReader::record`]).
    pub(super) fn recording(jpeg: &'j Jpeg, scan: R) -> Self {
        let mut reader = Self::new(jpeg, scan, true);
        reader.bits.record();
        reader
    }

    pub(super) fn row(&mut self, cols: u32) -> Result<Row, JpegError> {
        let components = &self.jpeg.components;
        let mut blocks: McuRow = if self.copy {
            Vec::new()
        } else {
            components.iter().map(|c| vec![[0i16; 64]; cols as usize * usize::from(c.h) * usize::from(c.v)]).collect()
        };
        let mut mcus = Vec::with_capacity(if self.copy { cols as usize } else { 0 });
        let mut scratch = [0i16; 64];
        let interval = self.jpeg.restart_interval;
        for mx in 0..cols as usize {
            if interval > 0 && self.since_restart == interval {
                self.bits.restart()?;
                self.predictors.iter_mut().for_each(|p| *p = 0);
                self.since_restart = 0;
            }
            let mut mcu = McuBits { start: self.bits.position(), ..McuBits::default() };
            for (ci, c) in components.iter().enumerate() {
                let dc = self.jpeg.dc[usize::from(c.td)].as_ref().expect("checked at parse");
                let ac = self.jpeg.ac[usize::from(c.ta)].as_ref().expect("checked at parse");
                let per_row = cols as usize * usize::from(c.h);
                for by in 0..usize::from(c.v) {
                    for bx in 0..usize::from(c.h) {
                        let block = if self.copy {
                            &mut scratch
                        } else {
                            &mut blocks[ci][by * per_row + mx * usize::from(c.h) + bx]
                        };
                        let dc_at = self.bits.position();
                        decode_dc(&mut self.bits, block, &mut self.predictors[ci], dc)?;
                        if by == 0 && bx == 0 && self.copy {
                            let bits = &mut mcu.components[ci];
                            (bits.dc_at, bits.ac_at, bits.first_dc) = (dc_at, self.bits.position(), block[0]);
                        }
                        if self.copy {
                            skip_ac(&mut self.bits, ac)?;
                        } else {
                            read_ac(&mut self.bits, ac, block)?;
                        }
                    }
                }
                mcu.components[ci].last_dc = self.predictors[ci];
            }
            if self.copy {
                mcus.push(mcu);
            }
            self.since_restart += 1;
        }
        if self.bits.overrun() {
            return Err(JpegError::Malformed("the scan ends early"));
        }
        Ok(if self.copy { Row::Bits { mcus, end: self.bits.position() } } else { Row::Blocks(blocks) })
    }
}

/// A block's DC coefficient, into `block[0]` and the predictor.
fn decode_dc(
    bits: &mut BitReader<impl std::io::Read>,
    block: &mut Block,
    predictor: &mut i16,
    dc: &HuffmanDecoder,
) -> Result<(), JpegError> {
    let size = dc.decode(bits)?;
    if size > 11 {
        return Err(JpegError::Malformed("a DC difference too large"));
    }
    let dc = i32::from(*predictor) + bits.receive_extend(size);
    // An 8-bit image's DC is within ±1024: then every difference a crop
    // writes has a standard code (category 11 at most).
    if !(-1024..=1023).contains(&dc) {
        return Err(JpegError::Malformed("a DC coefficient out of range"));
    }
    *predictor = dc as i16;
    block[0] = *predictor;
    Ok(())
}

/// A block's AC coefficients, into `block[1..]` (which must be zero).
fn read_ac(bits: &mut BitReader<impl std::io::Read>, ac: &HuffmanDecoder, block: &mut Block) -> Result<(), JpegError> {
    read_ac_from(1, bits, ac, Some(block))
}

/// A block's AC coefficients from `k` on: into `block`, or without one
/// read past and checked (how [`skip_ac`] reads a long code).
fn read_ac_from(
    mut k: usize,
    bits: &mut BitReader<impl std::io::Read>,
    ac: &HuffmanDecoder,
    mut block: Option<&mut Block>,
) -> Result<(), JpegError> {
    while k < 64 {
        // At least 32 bits: a short code and its extra bits, or a long
        // code's 16 and then up to 10 extra bits.
        let rs = match ac.fast(bits.peek32()) {
            Some((length, rs)) => {
                bits.consume(length);
                rs
            }
            None => ac.decode(bits)?,
        };
        let (run, size) = (usize::from(rs >> 4), rs & 15);
        if size == 0 {
            if run != 15 {
                break; // end of block
            }
            k += 16;
            continue;
        }
        k += run;
        if k > 63 || size > 10 {
            return Err(JpegError::Malformed("an AC coefficient out of the block"));
        }
        match block.as_deref_mut() {
            Some(block) => block[k] = bits.receive_extend(size) as i16,
            None => bits.consume(u32::from(size)),
        }
        k += 1;
    }
    if k > 64 {
        return Err(JpegError::Malformed("a zero run out of the block"));
    }
    Ok(())
}

/// A block's AC coefficients read past, checked but without their values
/// (what copying bits needs): one table lookup a coefficient, code and
/// extra bits consumed at once; a long code takes [`read_ac`]'s way.
fn skip_ac(bits: &mut BitReader<impl std::io::Read>, ac: &HuffmanDecoder) -> Result<(), JpegError> {
    let mut k: usize = 1;
    while k < 64 {
        let Some((length, advance)) = ac.skip(bits.peek32()) else {
            return read_ac_from(k, bits, ac, None);
        };
        bits.consume(length);
        if advance == END {
            return Ok(());
        }
        k += advance as usize;
    }
    if k > 64 {
        return Err(JpegError::Malformed("an AC coefficient out of the block"));
    }
    Ok(())
}

pub(super) fn encode_block(
    w: &mut BitWriter,
    block: &Block,
    predictor: &mut i16,
    dc: &HuffmanEncoder,
    ac: &HuffmanEncoder,
) {
    let diff = i32::from(block[0]) - i32::from(*predictor);
    *predictor = block[0];
    let (size, bits) = magnitude(diff);
    dc.put_with(w, size, bits);
    // Walk the non-zero coefficients only: bit k set for block[k] != 0.
    let mut nonzero = block.iter().enumerate().skip(1).fold(0u64, |m, (k, &c)| m | u64::from(c != 0) << k);
    let mut last = 0;
    while nonzero != 0 {
        let k = nonzero.trailing_zeros();
        nonzero &= nonzero - 1;
        let mut run = k - last - 1;
        last = k;
        while run >= 16 {
            ac.put_with(w, 0xF0, 0);
            run -= 16;
        }
        let (size, bits) = magnitude(i32::from(block[k as usize]));
        ac.put_with(w, (run as u8) << 4 | size, bits);
    }
    if last < 63 {
        ac.put_with(w, 0x00, 0);
    }
}

/// A value's size category and its extra bits (ones' complement when negative).
pub(super) fn magnitude(value: i32) -> (u8, u32) {
    let size = (32 - value.unsigned_abs().leading_zeros()) as u8;
    let bits = if value < 0 { (value - 1) as u32 & ((1u32 << size) - 1) } else { value as u32 };
    (size, bits)
}
