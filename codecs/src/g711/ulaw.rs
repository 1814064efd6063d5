//! G.711 µ-law (North America, Japan; Twilio's wire format), after ITU-T G.191
//! `ulaw_compress`/`ulaw_expand`. See the [parent module](super) for how this differs from
//! Sun's `g711.c` on 508 negative inputs.

/// The code for silence (decodes to 0). 0x7F ("negative zero") also decodes to 0.
pub const SILENCE: u8 = 0xFF;

static DECODE: [i16; 256] = build_decode();
static ENCODE: [u8; 1 << 14] = build_encode();

/// Decodes one µ-law code to 16-bit linear PCM.
#[inline]
pub fn decode(code: u8) -> i16 {
    DECODE[code as usize]
}

/// Encodes one 16-bit linear sample to µ-law (G.191 rounding).
#[inline]
pub fn encode(sample: i16) -> u8 {
    // The code depends only on the 14 high bits, so the table is indexed by them.
    ENCODE[((sample >> 2) as u16 & 0x3FFF) as usize]
}

/// Decodes `codes`, appending one linear sample per code to `out`.
pub fn decode_into(codes: &[u8], out: &mut Vec<i16>) {
    out.extend(codes.iter().map(|&c| decode(c)));
}

/// Encodes `samples`, appending one code per sample to `out`.
pub fn encode_into(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| encode(s)));
}

/// G.191 `ulaw_expand` for one code, on the 16-bit scale.
const fn expand(code: u8) -> i16 {
    let positive = code >= 0x80;
    let inverted = !code;
    let exponent = ((inverted >> 4) & 0x07) as i32;
    let mantissa = (inverted & 0x0F) as i32;
    let step = 4 << (exponent + 1);
    let magnitude = (0x80 << exponent) + step * mantissa + step / 2 - 4 * 33;
    (if positive { magnitude } else { -magnitude }) as i16
}

/// G.191 `ulaw_compress` for one 16-bit sample.
const fn compress(sample: i16) -> u8 {
    let x = sample as i32;
    // One's complement for negatives: this is where G.191 and Sun's g711.c part ways.
    let mut absno = if x < 0 { (!x) >> 2 } else { x >> 2 } + 33;
    if absno > 0x1FFF {
        absno = 0x1FFF;
    }
    let mut i = absno >> 6;
    let mut segno = 1;
    while i != 0 {
        segno += 1;
        i >>= 1;
    }
    let high_nibble = 0x08 - segno;
    let low_nibble = 0x0F - ((absno >> segno) & 0x0F);
    let code = (high_nibble << 4) | low_nibble;
    (if x >= 0 { code | 0x80 } else { code }) as u8
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

const fn build_encode() -> [u8; 1 << 14] {
    let mut table = [0; 1 << 14];
    let mut i = 0;
    while i < (1 << 14) {
        // Index i holds the 14 high bits of a sample; any sample with those bits will do.
        let sample = ((i as u16) << 2) as i16;
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
    fn both_zeros_decode_to_zero() {
        assert_eq!(decode(0xFF), 0);
        assert_eq!(decode(0x7F), 0);
        assert_eq!(encode(0), SILENCE);
    }
}
