//! G.711 A-law (Europe and most of the world), after ITU-T G.191
//! `alaw_compress`/`alaw_expand`. Sun's `g711.c` agrees with it on every input.

/// The code for silence: 0xD5 (decodes to +8, the smallest positive step).
pub const SILENCE: u8 = 0xD5;

static DECODE: [i16; 256] = build_decode();
static ENCODE: [u8; 1 << 12] = build_encode();

/// Decodes one A-law code to 16-bit linear PCM.
#[inline]
pub fn decode(code: u8) -> i16 {
    DECODE[code as usize]
}

/// Encodes one 16-bit linear sample to A-law.
#[inline]
pub fn encode(sample: i16) -> u8 {
    // The code depends only on the 12 high bits, so the table is indexed by them.
    ENCODE[((sample >> 4) as u16 & 0x0FFF) as usize]
}

/// Decodes `codes`, appending one linear sample per code to `out`.
pub fn decode_into(codes: &[u8], out: &mut Vec<i16>) {
    out.extend(codes.iter().map(|&c| decode(c)));
}

/// Encodes `samples`, appending one code per sample to `out`.
pub fn encode_into(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| encode(s)));
}

/// G.191 `alaw_expand` for one code, on the 16-bit scale.
const fn expand(code: u8) -> i16 {
    let ix = ((code ^ 0x55) & 0x7F) as i32;
    let exponent = ix >> 4;
    let mut mantissa = ix & 0x0F;
    if exponent > 0 {
        mantissa += 16;
    }
    // Left-justify and add half a quantisation step.
    mantissa = (mantissa << 4) + 0x08;
    if exponent > 1 {
        mantissa <<= exponent - 1;
    }
    (if code > 127 { mantissa } else { -mantissa }) as i16
}

/// G.191 `alaw_compress` for one 16-bit sample (only the 12 high bits count).
const fn compress(sample: i16) -> u8 {
    let x = sample as i32;
    let mut ix = if x < 0 { (!x) >> 4 } else { x >> 4 };
    if ix > 15 {
        let mut exponent = 1;
        while ix > 16 + 15 {
            ix >>= 1;
            exponent += 1;
        }
        ix -= 16;
        ix += exponent << 4;
    }
    if x >= 0 {
        ix |= 0x80;
    }
    (ix ^ 0x55) as u8
}

const fn build_decode() -> [i16; 256] {
    let mut table = [0; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = expand(c as u8);
        c += 1;
    }
    table
}

const fn build_encode() -> [u8; 1 << 12] {
    let mut table = [0; 1 << 12];
    let mut i = 0;
    while i < (1 << 12) {
        let sample = ((i as u16) << 4) as i16;
        table[i] = compress(sample);
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_algorithm_for_every_input() {
        for x in i16::MIN..=i16::MAX {
            assert_eq!(encode(x), compress(x), "{x}");
        }
    }

    #[test]
    fn silence() {
        assert_eq!(encode(0), SILENCE);
        assert_eq!(decode(SILENCE), 8);
    }
}
