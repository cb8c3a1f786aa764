//! Entropy-coded bits: reading with 0xFF00 unstuffing and restart markers,
//! writing with stuffing and one-bit padding.

use super::JpegError;

/// Bytes of the scan read ahead at a time: the reader's memory, whatever the
/// file's size.
const BUFFER: usize = 64 * 1024;

pub struct BitReader<R> {
    source: R,
    buffer: Box<[u8]>,
    /// The unread bytes are `buffer[pos..len]`.
    pos: usize,
    len: usize,
    /// Bits not yet consumed, left-aligned.
    acc: u64,
    count: u32,
    /// A marker (or the end of the data) was reached: zeros are fed from then on.
    at_marker: bool,
    /// Zero bits fed past a marker.
    padding: u32,
    /// Bits fed into the accumulator so far.
    fed: u64,
    /// When recording: the bits fed, unstuffed, from bit `tape_start` on.
    tape: Option<Vec<u8>>,
    tape_start: u64,
}

impl<R: std::io::Read> BitReader<R> {
    pub fn new(source: R) -> Self {
        let buffer = vec![0; BUFFER].into_boxed_slice();
        Self {
            source,
            buffer,
            pos: 0,
            len: 0,
            acc: 0,
            count: 0,
            at_marker: false,
            padding: 0,
            fed: 0,
            tape: None,
            tape_start: 0,
        }
    }

    /// Keeps the bits read from now on, for [`BitWriter::copy`].
    pub fn record(&mut self) {
        debug_assert_eq!(self.fed, 0, "recording starts with the scan");
        self.tape = Some(Vec::new());
    }

    /// Bits consumed so far.
    pub fn position(&self) -> u64 {
        self.fed - u64::from(self.count)
    }

    /// The recorded bits and the position of their first.
    pub fn tape(&self) -> (&[u8], u64) {
        (self.tape.as_deref().unwrap_or_default(), self.tape_start)
    }

    /// Lets the recording drop what comes before bit `position`.
    pub fn forget_before(&mut self, position: u64) {
        let Some(tape) = &mut self.tape else { return };
        let bytes = ((position.saturating_sub(self.tape_start)) / 8) as usize;
        // In large steps: each drop moves what is left.
        if bytes > 64 * 1024 && bytes * 2 > tape.len() {
            tape.drain(..bytes);
            self.tape_start += 8 * bytes as u64;
        }
    }

    /// The byte `ahead` (0 or 1) bytes on, reading more when needed; `None`
    /// at the end (a read error ends the data too: the scan then ends early).
    fn peek(&mut self, ahead: usize) -> Option<u8> {
        if self.pos + ahead >= self.len {
            self.buffer.copy_within(self.pos..self.len, 0);
            (self.len, self.pos) = (self.len - self.pos, 0);
            while self.len <= ahead {
                match self.source.read(&mut self.buffer[self.len..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => self.len += n,
                }
            }
        }
        (self.pos + ahead < self.len).then(|| self.buffer[self.pos + ahead])
    }

    fn fill(&mut self) {
        // The common case: eight buffered bytes without a 0xFF among them
        // enter the accumulator at once.
        if !self.at_marker && self.count <= 56 && self.pos + 8 <= self.len {
            let word = u64::from_be_bytes(self.buffer[self.pos..self.pos + 8].try_into().expect("8 bytes"));
            if !has_ff_byte(word) {
                let take = (64 - self.count) / 8;
                let fresh = if take == 8 { word } else { word >> (64 - 8 * take) };
                self.acc |= fresh << (64 - self.count - 8 * take);
                self.count += 8 * take;
                if let Some(tape) = &mut self.tape {
                    tape.extend_from_slice(&self.buffer[self.pos..self.pos + take as usize]);
                }
                self.pos += take as usize;
                self.fed += u64::from(8 * take);
                return;
            }
        }
        while self.count <= 56 {
            let mut byte = 0;
            if !self.at_marker {
                match (self.peek(0), self.peek(1)) {
                    (Some(0xFF), Some(0x00)) => {
                        byte = 0xFF;
                        self.pos += 2;
                    }
                    (Some(0xFF), _) | (None, _) => self.at_marker = true,
                    (Some(b), _) => {
                        byte = b;
                        self.pos += 1;
                    }
                }
            }
            if self.at_marker {
                self.padding += 8;
            }
            self.acc |= u64::from(byte) << (56 - self.count);
            self.count += 8;
            self.fed += 8;
            if let Some(tape) = &mut self.tape {
                tape.push(byte);
            }
        }
    }

    /// The next 32 bits, without consuming them.
    #[inline]
    pub fn peek32(&mut self) -> u32 {
        if self.count < 32 {
            self.fill();
        }
        (self.acc >> 32) as u32
    }

    /// The next 16 bits, without consuming them.
    #[inline]
    pub fn peek16(&mut self) -> u32 {
        if self.count < 16 {
            self.fill();
        }
        (self.acc >> 48) as u32
    }

    /// Drops `n` bits; a peek must have made them available.
    #[inline]
    pub fn consume(&mut self, n: u32) {
        self.acc <<= n;
        self.count -= n;
    }

    pub fn bits(&mut self, n: u8) -> u32 {
        if n == 0 {
            return 0;
        }
        if self.count < u32::from(n) {
            self.fill();
        }
        let v = (self.acc >> (64 - u32::from(n))) as u32;
        self.consume(u32::from(n));
        v
    }

    /// `size` bits read as a signed value (T.81 F.2.2.1, EXTEND).
    pub fn receive_extend(&mut self, size: u8) -> i32 {
        if size == 0 {
            return 0;
        }
        let v = self.bits(size) as i32;
        if v < 1 << (size - 1) { v - (1 << size) + 1 } else { v }
    }

    /// Whether zeros fed past the data's end (or a marker) were consumed.
    pub fn overrun(&self) -> bool {
        self.padding > self.count
    }

    /// Skips to just past the next restart marker and starts afresh.
    pub fn restart(&mut self) -> Result<(), JpegError> {
        if self.overrun() {
            return Err(JpegError::Malformed("the scan ends early"));
        }
        (self.acc, self.count, self.padding, self.at_marker) = (0, 0, 0, false);
        // Bytes before the marker are padding; a decoder skips junk too.
        while let (Some(a), Some(b)) = (self.peek(0), self.peek(1)) {
            if a == 0xFF && (0xD0..=0xD7).contains(&b) {
                self.pos += 2;
                return Ok(());
            }
            if a == 0xFF && !matches!(b, 0x00 | 0xFF) {
                break; // another marker: the restart marker is missing
            }
            self.pos += 1;
        }
        Err(JpegError::Malformed("a restart marker is missing"))
    }
}

/// A scan's entropy-coded bytes up to its first marker with their stuffing
/// removed (0xFF00 is 0xFF), into `out`: the bits a [`BitReader`] reads, bit
/// `n` of the scan at bit `n` of `out`, for [`BitWriter::copy`].
pub fn unstuff(scan: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut rest = scan;
    while let Some(at) = rest.iter().position(|&b| b == 0xFF) {
        out.extend_from_slice(&rest[..at]);
        if rest.get(at + 1) != Some(&0x00) {
            return;
        }
        out.push(0xFF);
        rest = &rest[at + 2..];
    }
    out.extend_from_slice(rest);
}

/// Whether any byte of `word` is 0xFF (a zero byte of its complement).
fn has_ff_byte(word: u64) -> bool {
    let inverse = !word;
    inverse.wrapping_sub(0x0101_0101_0101_0101) & !inverse & 0x8080_8080_8080_8080 != 0
}

pub struct BitWriter {
    out: Vec<u8>,
    /// The low `count` bits (fewer than 32) are not yet written.
    acc: u64,
    count: u32,
}

impl BitWriter {
    pub fn new(out: Vec<u8>) -> Self {
        Self { out, acc: 0, count: 0 }
    }

    /// Appends the low `n` bits of `bits` (n <= 32).
    pub fn put(&mut self, bits: u32, n: u8) {
        let n = u32::from(n);
        self.acc = (self.acc << n) | (u64::from(bits) & ((1u64 << n) - 1));
        self.count += n;
        if self.count >= 32 {
            self.count -= 32;
            let word = (self.acc >> self.count) as u32;
            if word.to_be_bytes().contains(&0xFF) {
                for byte in word.to_be_bytes() {
                    self.byte(byte);
                }
            } else {
                self.out.extend_from_slice(&word.to_be_bytes());
            }
        }
    }

    /// Appends the bits `from..to` of a [`BitReader`]'s recording (`tape`,
    /// whose first bit is at `start`): entropy-coded data copied as it is.
    pub fn copy(&mut self, (tape, start): (&[u8], u64), from: u64, to: u64) {
        let (mut at, end) = (from - start, to - start);
        while at < end {
            let n = (end - at).min(32) as u32;
            let byte = (at / 8) as usize;
            let mut word = [0u8; 8];
            let available = tape.len().saturating_sub(byte).min(8);
            word[..available].copy_from_slice(&tape[byte..byte + available]);
            let bits = u64::from_be_bytes(word) << (at % 8);
            self.put((bits >> (64 - n)) as u32, n as u8);
            at += u64::from(n);
        }
    }

    /// A whole byte, stuffed with a zero after 0xFF.
    fn byte(&mut self, byte: u8) {
        self.out.push(byte);
        if byte == 0xFF {
            self.out.push(0x00);
        }
    }

    /// The whole bytes written so far (the bits of a partial byte stay).
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Pads the last byte with ones and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let pad = (8 - self.count % 8) % 8;
        self.acc = (self.acc << pad) | ((1u64 << pad) - 1);
        self.count += pad;
        while self.count >= 8 {
            self.count -= 8;
            self.byte((self.acc >> self.count) as u8);
        }
        self.out
    }
}
