//! How far a worker's samples may be from the reference (tilepipe's own
//! pipeline), per operation: the accuracy docs/protocol.md asks for.
//! Point operations have exact integer or rounding formulas and must be
//! exact; blurs may round differently inside (OpenCV's fixed-point
//! convolution, a float one) by a level or two.

use pipeline::ops::Operation;

/// Largest difference allowed for one step, in levels of 255.
pub fn of(op: &Operation) -> u8 {
    match *op {
        Operation::GaussianBlur { .. } | Operation::BoxBlur { .. } => 2,
        // The blur's error, amplified by `amount`, plus the final rounding.
        Operation::Sharpen { amount, .. } => (1.0 + 2.0 * amount).ceil().min(255.0) as u8,
        Operation::EdgeDetect | Operation::Grayscale | Operation::Invert | Operation::BrightnessContrast { .. } => 0,
    }
}

/// A chain's allowance: the sum of its steps'.
pub fn of_chain(chain: &[Operation]) -> u8 {
    chain.iter().map(of).fold(0u8, u8::saturating_add)
}

/// What decoding a JPEG task with another decoder than zune-jpeg (the
/// reference; libjpeg-turbo, OpenCV) may add: their IDCT and chroma
/// upsampling round differently.
pub const JPEG_DECODE: u8 = 3;

/// What a JPEG result tile may differ from the reference's own JPEG tile by,
/// once both are decoded, beyond the chain's allowance: another encoder's
/// DCT rounds differently.
pub const JPEG_RESULT: u8 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_operations_are_exact_and_blurs_are_not() {
        assert_eq!(of(&Operation::Invert), 0);
        assert_eq!(of(&Operation::GaussianBlur { kernel: 51, sigma: None }), 2);
        assert_eq!(of(&Operation::Sharpen { radius: 2, amount: 1.5 }), 4);
        let seed = [Operation::Grayscale, Operation::GaussianBlur { kernel: 51, sigma: None }, Operation::Invert];
        assert_eq!(of_chain(&seed), 2);
    }
}
