//! In-band DTMF generation: the two tones of a digit summed, at the levels a telephone set
//! sends them (high group 2 dB above low, both well below full scale so µ-law carries them
//! without clipping).

use std::f64::consts::PI;

use super::Digit;

/// Peak amplitude of the low-group tone, as a fraction of full scale (−12 dBFS).
const LOW_AMPLITUDE: f64 = 0.25;
/// Peak amplitude of the high-group tone: 2 dB above the low one (the usual "forward twist").
const HIGH_AMPLITUDE: f64 = 0.315;

/// Appends `len` samples of `digit`'s tone pair at `sample_rate` Hz to `out`, starting at
/// phase zero. Callers add silence between digits themselves (Q.24: at least 40 ms each).
pub fn generate(digit: Digit, sample_rate: u32, len: usize, out: &mut Vec<i16>) {
    let (low, high) = digit.frequencies();
    let rate = f64::from(sample_rate.max(1));
    let (wl, wh) = (2.0 * PI * low / rate, 2.0 * PI * high / rate);
    out.extend((0..len).map(|i| {
        let n = i as f64;
        let v = LOW_AMPLITUDE * (wl * n).sin() + HIGH_AMPLITUDE * (wh * n).sin();
        (v * 32767.0).round() as i16
    }));
}
