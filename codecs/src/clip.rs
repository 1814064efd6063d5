//! Whole-clip sample-rate conversion between *any* two rates (44.1 kHz, 22.05 kHz, 32 kHz,
//! 96 kHz, …), for audio prepared once rather than streamed: a hold prompt from a WAV file.
//!
//! The streaming [`Resampler`](crate::Resampler) only knows the four telephony rates, whose
//! ratios are small integers. A rate like 44 100 Hz is 147/160 of 48 kHz, so this module uses
//! band-limited interpolation instead (Smith and Gossett, 1984): every output sample is a
//! dot product of the input with a Kaiser-windowed sinc centred on its exact input time.
//! The kernel is tabulated at [`TABLE_STEPS`] positions per input sample and interpolated
//! linearly between them; since every tap of one output sample shares the same fractional
//! offset, that is two contiguous dot products per output sample.
//!
//! The filter meets the same mask as the streaming resampler: passband to 0.9 × the lower
//! Nyquist frequency, stopband from the lower Nyquist frequency on at 60 dB or more. It is
//! zero-phase (the output is not delayed) and each output is normalised by its weights, so
//! DC passes exactly; samples beyond the ends of the clip count as silence.
//!
//! The cost is about 160 multiply-adds per output sample for 44.1 → 48 kHz, done once per
//! clip. Nothing here allocates per sample; the work is pure and does no IO.

use crate::CodecError;

/// The lowest input or output rate taken.
pub const MIN_RATE: u32 = 1000;
/// The highest input or output rate taken.
pub const MAX_RATE: u32 = 384_000;
/// Kernel table positions per input sample. With linear interpolation between them the
/// kernel is off by less than −80 dB of its peak, far under the 60 dB stopband.
pub const TABLE_STEPS: usize = 128;

/// The same design attenuation as the streaming resampler (see `resample.rs`).
const DESIGN_ATTENUATION_DB: f64 = 67.0;
const PASSBAND_EDGE: f64 = 0.9;
const STOPBAND_EDGE: f64 = 1.0;
/// Accumulator lanes of the dot product, so the compiler can keep them in SIMD registers.
const LANES: usize = 8;

/// Converts a whole clip of 16-bit linear samples from `from` Hz to `to` Hz (both within
/// [`MIN_RATE`]..=[`MAX_RATE`]). The output has `ceil(len · to / from)` samples, aligned in
/// time with the input (no delay); equal rates return the input unchanged.
pub fn resample(input: &[i16], from: u32, to: u32) -> Result<Vec<i16>, CodecError> {
    for rate in [from, to] {
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(CodecError::UnsupportedClipRate(rate));
        }
    }
    if from == to || input.is_empty() {
        return Ok(input.to_vec());
    }
    let kernel = Kernel::new(from, to);
    let k = kernel.taps;
    let half = k / 2;
    // The input with `k` samples of silence on each side, so every window is in bounds.
    let mut padded = vec![0f32; input.len() + 2 * k];
    for (p, &s) in padded[k..].iter_mut().zip(input) {
        *p = f32::from(s);
    }
    let out_len = (input.len() as u64 * u64::from(to)).div_ceil(u64::from(from)) as usize;
    let step = f64::from(from) / f64::from(to);
    let mut out = Vec::with_capacity(out_len);
    for j in 0..out_len {
        // The output's time in input samples, split into whole and fraction.
        let t = j as f64 * step;
        let base = t.floor();
        let pos = (t - base) * TABLE_STEPS as f64;
        let phase = (pos as usize).min(TABLE_STEPS - 1);
        let frac = (pos - phase as f64) as f32;
        // Taps cover input samples base − half + 1 ..= base + half, i.e. padded from
        // base − half + 1 + k on.
        let start = base as usize + k + 1 - half;
        let window = &padded[start..start + k];
        let (a, b) = (kernel.row(phase), kernel.row(phase + 1));
        let acc = (1.0 - frac) * dot(a, window) + frac * dot(b, window);
        let weight = (1.0 - frac) * kernel.sums[phase] + frac * kernel.sums[phase + 1];
        let v = if weight.abs() > f32::EPSILON { acc / weight } else { acc };
        out.push(v.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16);
    }
    Ok(out)
}

/// The tabulated kernel for one rate pair: `TABLE_STEPS + 1` rows (fractional offsets
/// 0, 1/TABLE_STEPS, …, 1) of `taps` weights, each row in input order.
struct Kernel {
    taps: usize,
    rows: Vec<f32>,
    /// Each row's sum of weights (its DC gain).
    sums: Vec<f32>,
}

impl Kernel {
    fn new(from: u32, to: u32) -> Kernel {
        let rate = f64::from(from);
        let nyquist = f64::from(from.min(to)) / 2.0;
        let (pass, stop) = (PASSBAND_EDGE * nyquist, STOPBAND_EDGE * nyquist);
        let a = DESIGN_ATTENUATION_DB;
        let beta = 0.1102 * (a - 8.7);
        // Kaiser's length formula, in input samples.
        let transition = 2.0 * std::f64::consts::PI * (stop - pass) / rate;
        let n_min = ((a - 7.95) / (2.285 * transition)).ceil() as usize + 1;
        // An even number of taps, padded to whole lanes: half on each side of the output time.
        let taps = n_min.div_ceil(2 * LANES) * 2 * LANES;
        let half_width = taps as f64 / 2.0;
        let cutoff = (pass + stop) / 2.0 / rate; // cycles per input sample
        let i0_beta = bessel_i0(beta);
        let h = |d: f64| {
            let r = d / half_width;
            if r.abs() >= 1.0 {
                return 0.0;
            }
            let x = 2.0 * cutoff * d;
            let sinc = if x == 0.0 { 1.0 } else { (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x) };
            2.0 * cutoff * sinc * bessel_i0(beta * (1.0 - r * r).sqrt()) / i0_beta
        };
        let half = taps / 2;
        let mut rows = Vec::with_capacity((TABLE_STEPS + 1) * taps);
        let mut sums = Vec::with_capacity(TABLE_STEPS + 1);
        for step in 0..=TABLE_STEPS {
            let frac = step as f64 / TABLE_STEPS as f64;
            // Tap m meets input sample base − half + 1 + m, at distance frac + half − 1 − m.
            let row: Vec<f64> = (0..taps).map(|m| h(frac + half as f64 - 1.0 - m as f64)).collect();
            sums.push(row.iter().sum::<f64>() as f32);
            rows.extend(row.iter().map(|&w| w as f32));
        }
        Kernel { taps, rows, sums }
    }

    fn row(&self, step: usize) -> &[f32] {
        &self.rows[step * self.taps..(step + 1) * self.taps]
    }
}

/// `Σ a[i] · b[i]` over slices whose length is a multiple of [`LANES`], in `LANES` partial
/// sums (float addition is not associative, so the compiler would not split one sum itself).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    for (ca, cb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for i in 0..LANES {
            acc[i] += ca[i] * cb[i];
        }
    }
    acc.iter().sum()
}

/// The amplitude of the sinusoid at `freq` in `x` (one DFT bin): how much of a tone a
/// conversion kept, or let through where it should not. For checks and tests, not the hot
/// path.
pub fn amplitude_at(x: &[i16], rate: u32, freq: f64) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let (mut re, mut im) = (0.0, 0.0);
    for (i, &s) in x.iter().enumerate() {
        re += f64::from(s) * (w * i as f64).cos();
        im -= f64::from(s) * (w * i as f64).sin();
    }
    2.0 * (re * re + im * im).sqrt() / x.len() as f64
}

/// The modified Bessel function of the first kind, order 0, by its power series.
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for i in 1..50 {
        term *= (half / i as f64) * (half / i as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f64, amp: f64, n: usize) -> Vec<i16> {
        (0..n).map(|i| (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin()) as i16).collect()
    }

    #[test]
    fn a_tone_keeps_its_pitch_and_level_across_odd_rates() {
        for (from, to) in
            [(44100, 48000), (44100, 8000), (22050, 24000), (11025, 16000), (96000, 48000), (32000, 48000)]
        {
            let input = sine(from, 440.0, 8000.0, from as usize / 2);
            let out = resample(&input, from, to).unwrap();
            assert_eq!(out.len(), (input.len() as u64 * u64::from(to)).div_ceil(u64::from(from)) as usize);
            // Away from the edges the output is the same sine sampled at the new rate.
            let want = sine(to, 440.0, 8000.0, out.len());
            let edge = to as usize / 50;
            let err: f64 = out[edge..out.len() - edge]
                .iter()
                .zip(&want[edge..])
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum::<f64>()
                / (out.len() - 2 * edge) as f64;
            let snr = 10.0 * ((8000.0f64 * 8000.0 / 2.0) / err).log10();
            assert!(snr > 50.0, "{from}->{to}: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn what_the_lower_rate_cannot_carry_is_removed() {
        // 6 kHz does not exist at 8 kHz: it must not alias to 2 kHz.
        let input = sine(44100, 6000.0, 16000.0, 22050);
        let out = resample(&input, 44100, 8000).unwrap();
        let alias = amplitude_at(&out, 8000, 2000.0);
        assert!(20.0 * (alias / 16000.0).log10() < -55.0, "alias at {alias:.1}");
        // And a tone in the passband keeps its level within a fraction of a dB.
        let input = sine(44100, 3000.0, 16000.0, 22050);
        let out = resample(&input, 44100, 8000).unwrap();
        let level = 20.0 * (amplitude_at(&out[400..out.len() - 400], 8000, 3000.0) / 16000.0).log10();
        assert!(level.abs() < 0.5, "{level:.2} dB");
    }

    #[test]
    fn dc_passes_exactly_and_equal_rates_pass_through() {
        let input = vec![1234i16; 4410];
        let out = resample(&input, 44100, 48000).unwrap();
        assert!(out[200..out.len() - 200].iter().all(|&s| s == 1234), "{:?}", &out[200..210]);
        assert_eq!(resample(&input, 16000, 16000).unwrap(), input);
        assert!(resample(&[], 44100, 8000).unwrap().is_empty());
    }

    #[test]
    fn rejects_rates_outside_the_range() {
        assert_eq!(resample(&[0; 10], 999, 8000), Err(CodecError::UnsupportedClipRate(999)));
        assert_eq!(resample(&[0; 10], 8000, 400_000), Err(CodecError::UnsupportedClipRate(400_000)));
    }
}
