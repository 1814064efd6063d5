//! L16: 16-bit signed linear PCM as bytes. Little-endian on the wire unless a protocol says
//! otherwise (RTP's L16 of RFC 3551 is big-endian, hence the `_be` pair).
//!
//! Decoding is *checked*: a byte count that is not a whole number of samples is the sender's
//! bug, and is rejected with [`CodecError::OddLength`] rather than silently truncated, because
//! dropping one byte would shift every later sample by half a sample and turn audio into noise.

use crate::CodecError;

/// Decodes little-endian L16 bytes, appending the samples to `out`.
/// Fails, appending nothing, if `bytes` has an odd length.
pub fn decode_le(bytes: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
    check_even(bytes)?;
    out.extend(bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])));
    Ok(())
}

/// Decodes big-endian (network order) L16 bytes, appending the samples to `out`.
/// Fails, appending nothing, if `bytes` has an odd length.
pub fn decode_be(bytes: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
    check_even(bytes)?;
    out.extend(bytes.chunks_exact(2).map(|b| i16::from_be_bytes([b[0], b[1]])));
    Ok(())
}

/// Encodes samples as little-endian L16, appending to `out`.
pub fn encode_le(samples: &[i16], out: &mut Vec<u8>) {
    // Resize then fill fixed-size pairs: the compiler vectorises this, unlike a push per byte.
    let start = out.len();
    out.resize(start + samples.len() * 2, 0);
    for (dst, s) in out[start..].chunks_exact_mut(2).zip(samples) {
        dst.copy_from_slice(&s.to_le_bytes());
    }
}

/// Encodes samples as big-endian (network order) L16, appending to `out`.
pub fn encode_be(samples: &[i16], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + samples.len() * 2, 0);
    for (dst, s) in out[start..].chunks_exact_mut(2).zip(samples) {
        dst.copy_from_slice(&s.to_be_bytes());
    }
}

fn check_even(bytes: &[u8]) -> Result<(), CodecError> {
    if bytes.len().is_multiple_of(2) { Ok(()) } else { Err(CodecError::OddLength { len: bytes.len() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn little_endian_on_the_wire() {
        let mut bytes = Vec::new();
        encode_le(&[1, -2, 0x1234], &mut bytes);
        assert_eq!(bytes, [0x01, 0x00, 0xFE, 0xFF, 0x34, 0x12]);
        let mut samples = Vec::new();
        decode_le(&bytes, &mut samples).unwrap();
        assert_eq!(samples, [1, -2, 0x1234]);
    }

    #[test]
    fn big_endian_when_asked() {
        let mut bytes = Vec::new();
        encode_be(&[0x1234], &mut bytes);
        assert_eq!(bytes, [0x12, 0x34]);
        let mut samples = Vec::new();
        decode_be(&bytes, &mut samples).unwrap();
        assert_eq!(samples, [0x1234]);
    }

    #[test]
    fn odd_lengths_are_rejected_and_nothing_is_appended() {
        let mut samples = vec![7];
        let err = decode_le(&[1, 2, 3], &mut samples).unwrap_err();
        assert_eq!(err, CodecError::OddLength { len: 3 });
        assert_eq!(err.to_string(), "L16 audio must be a whole number of 2-byte samples, got 3 bytes");
        assert_eq!(samples, [7]);
        assert!(decode_be(&[1], &mut samples).is_err());
        decode_le(&[], &mut samples).unwrap();
        assert_eq!(samples, [7]);
    }
}
