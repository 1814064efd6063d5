//! Streaming sample-rate conversion between 8, 16, 24 and 48 kHz by a rational polyphase FIR.
//!
//! Every supported pair is a ratio `L/M` with small integers (2, 3, 6, 3/2 and inverses), so
//! one design covers them all: conceptually upsample by `L`, low-pass at the high rate, keep
//! every `M`th sample; in practice only the taps that meet non-zero input are evaluated
//! (polyphase), so each output sample costs one dot product of `K` taps.
//!
//! The low-pass is a Kaiser-windowed sinc (the classic design of Kaiser, 1974; see also
//! Oppenheim & Schafer, *Discrete-Time Signal Processing*, §7.6) with:
//! - passband to 0.9 × the lower Nyquist frequency, flat within a few hundredths of a dB;
//! - stopband from the lower Nyquist frequency on, attenuated by at least 60 dB, so that no
//!   image (upsampling) or alias (downsampling) reaches the output above −60 dB;
//! - linear phase, so the **group delay** is the same at every frequency: exactly
//!   [`Resampler::delay`] output samples: about 44 samples at the lower of the two rates,
//!   i.e. 5.1–5.5 ms when one side is 8 kHz, 2.6–2.7 ms for 16 ↔ 24/48 kHz and 1.7–1.8 ms
//!   for 24 ↔ 48 kHz (the transition band, and so the filter, scale with the lower rate).
//!
//! Taps are fixed point (14 to 17 fractional bits, as many as each design allows) and the dot
//! product runs on `i16 × i16 → i32` with SSE2's `pmaddwd` on baseline x86-64 (NEON on
//! AArch64), through the `wide` crate's safe SIMD types, or, where the CPU has AVX2 (asked at
//! run time: the binary is built for the baseline), with its 256-bit `vpmaddwd` (module
//! `avx2`, the same samples); integer upsamplers compute two phases per pass over the input
//! window. Quantising the taps costs nothing measurable against a
//! 60 dB stopband. Each phase is normalised to exactly unity DC gain.
//!
//! State (the last `K − 1` input samples and the output phase) is carried across calls, so a
//! stream cut into 20 ms frames, or into any other pieces, resamples to exactly the same
//! samples as the whole stream at once: there is nothing at frame edges to click.

use wide::{i16x8, i32x4};

use crate::CodecError;

/// Attenuation the Kaiser formulas are asked for: 7 dB above the 60 dB requirement, which
/// covers the formulas' approximation and tap quantisation with at least 4.9 dB to spare for
/// every pair (65 dB left the long downsampling filters just short of 60 dB after
/// quantisation; 67 dB costs the upsamplers nothing, as their phases are padded to 88 taps
/// anyway).
const DESIGN_ATTENUATION_DB: f64 = 67.0;
/// Passband edge as a fraction of the lower Nyquist frequency.
const PASSBAND_EDGE: f64 = 0.9;
/// Stopband edge as a fraction of the lower Nyquist frequency.
const STOPBAND_EDGE: f64 = 1.0;
/// Taps per phase are padded to a multiple of this, so the dot product has no scalar tail.
const LANES: usize = 8;

/// The sample rates the gateway uses.
pub const RATES: [u32; 4] = [8000, 16000, 24000, 48000];

/// A streaming resampler for one channel of 16-bit linear audio.
#[derive(Clone)]
pub struct Resampler {
    from: u32,
    to: u32,
    /// Upsampling factor.
    l: usize,
    /// Downsampling factor.
    m: usize,
    /// Taps per phase.
    k: usize,
    /// `l` phases of `k` fixed-point taps each, each phase reversed so it lines up with input
    /// order.
    taps: Vec<i16>,
    /// Fractional bits of the taps.
    frac_bits: u32,
    /// The last `k - 1` input samples, then input not yet consumed.
    buf: Vec<i16>,
    /// High-rate position (in units of 1/`l` input samples from `buf[0]`) of the next output.
    pos: usize,
    /// Group delay in output samples.
    delay: usize,
    /// The dot products run on AVX2 (this CPU has it): 16 taps an instruction instead of 8.
    avx2: bool,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("taps_per_phase", &self.k)
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz, both one of [`RATES`]. Equal rates give a
    /// pass-through with no delay.
    pub fn new(from: u32, to: u32) -> Result<Resampler, CodecError> {
        for rate in [from, to] {
            if !RATES.contains(&rate) {
                return Err(CodecError::UnsupportedRate(rate));
            }
        }
        let g = gcd(from, to);
        let (l, m) = ((to / g) as usize, (from / g) as usize);
        if l == 1 && m == 1 {
            return Ok(Resampler {
                from,
                to,
                l,
                m,
                k: 1,
                taps: vec![1],
                frac_bits: 0,
                buf: Vec::new(),
                pos: 0,
                delay: 0,
                avx2: false,
            });
        }
        let design = Design::new(from, to, l, m);
        let mut r = Resampler {
            from,
            to,
            l,
            m,
            k: design.k,
            taps: design.taps,
            frac_bits: design.frac_bits,
            buf: Vec::new(),
            pos: 0,
            delay: design.delay,
            avx2: has_avx2(),
        };
        r.reset();
        Ok(r)
    }

    /// Input rate in Hz.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate in Hz.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Group delay in output samples (the filter is linear-phase, so this holds at every
    /// frequency): the output at index `n + delay()` corresponds to input time `n / to_rate`.
    /// For example 87 samples (5.44 ms) for 8 → 16 kHz, 41 samples (5.1 ms) for 16 → 8 kHz,
    /// 65 samples (2.7 ms) for 16 → 24 kHz; never more than 5.5 ms.
    pub fn delay(&self) -> usize {
        self.delay
    }

    /// Taps evaluated per output sample (the cost of the filter).
    pub fn taps_per_output(&self) -> usize {
        self.k
    }

    /// The same resampler computing with the x86-64 baseline's SSE2 (NEON on AArch64) even
    /// where the CPU has AVX2. The output is the same sample for sample (integer arithmetic,
    /// and no accumulator lane can overflow on either path); for tests and benchmarks.
    pub fn portable(mut self) -> Resampler {
        self.avx2 = false;
        self
    }

    /// Whether [`process`](Self::process) runs on AVX2 on this CPU.
    pub fn uses_avx2(&self) -> bool {
        self.avx2
    }

    /// Forgets all history, as if newly created (e.g. after a barge-in flush).
    pub fn reset(&mut self) {
        self.buf.clear();
        if self.is_passthrough() {
            self.pos = 0;
        } else {
            self.buf.resize(self.k - 1, 0);
            self.pos = (self.k - 1) * self.l;
        }
    }

    fn is_passthrough(&self) -> bool {
        self.l == 1 && self.m == 1
    }

    /// Resamples `input`, appending the output to `out`. Over a stream, each input sample
    /// yields `to / from` output samples on average; a 20 ms frame in always gives exactly
    /// 20 ms out.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if self.is_passthrough() {
            out.extend_from_slice(input);
            return;
        }
        self.buf.extend_from_slice(input);
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            avx2::process(self, out);
            return;
        }
        self.filter(out, dot, dot2);
    }

    /// Produces every output the buffered input allows, with the dot products given, and
    /// keeps the `k - 1` samples the next call needs. Inlined into each kernel, so the
    /// AVX2 one's dot products are inlined too.
    #[inline(always)]
    fn filter(
        &mut self,
        out: &mut Vec<i16>,
        dot: impl Fn(&[i16], &[i16]) -> i64,
        dot2: impl Fn(&[i16], &[i16], &[i16]) -> (i64, i64),
    ) {
        let (l, m, k) = (self.l, self.m, self.k);
        let end = self.buf.len() * l;
        if self.pos < end {
            out.reserve((end - self.pos).div_ceil(m));
        }
        let frac_bits = self.frac_bits;
        let taps = &self.taps[..];
        let buf = &self.buf[..];
        let mut newest = self.pos / l;
        let mut phase = self.pos % l;
        if m == 1 {
            // Integer upsampling: every input sample yields all `l` phases from the same
            // window, so compute them two at a time and load the window once per pair.
            debug_assert_eq!(phase, 0);
            while newest < buf.len() {
                let window = &buf[newest + 1 - k..=newest];
                let mut p = 0;
                while p + 1 < l {
                    let (a, b) = dot2(&taps[p * k..(p + 1) * k], &taps[(p + 1) * k..(p + 2) * k], window);
                    out.push(to_sample(a, frac_bits));
                    out.push(to_sample(b, frac_bits));
                    p += 2;
                }
                if p < l {
                    out.push(to_sample(dot(&taps[p * k..(p + 1) * k], window), frac_bits));
                }
                newest += 1;
            }
        } else {
            // Walk the input index and phase incrementally; a division per output would cost
            // as much as a quarter of the dot product.
            while newest < buf.len() {
                let window = &buf[newest + 1 - k..=newest];
                out.push(to_sample(dot(&taps[phase * k..(phase + 1) * k], window), frac_bits));
                phase += m;
                while phase >= l {
                    phase -= l;
                    newest += 1;
                }
            }
        }
        let pos = newest * l + phase;
        // Keep only the k - 1 samples the next output still needs.
        let drop = (pos / l + 1 - k).min(self.buf.len());
        self.buf.drain(..drop);
        self.pos = pos - drop * l;
    }
}

#[inline]
fn to_sample(acc: i64, frac_bits: u32) -> i16 {
    let rounded = (acc + ((1i64 << frac_bits) >> 1)) >> frac_bits;
    rounded.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
}

/// `Σ a[i] · b[i]` over slices whose length is a multiple of [`LANES`], with SSE2's
/// `pmaddwd` (NEON's `smlal` on AArch64) through `wide`'s safe wrappers; the compiler does not
/// find that instruction on its own for a sliding window. The four `i32` lanes cannot
/// overflow: the design keeps the taps each lane sees summing in magnitude below `2^31 / 2^15`
/// (see [`Design::new`]; checked in tests). Only their final sum is widened to `i64`.
#[inline]
fn dot(a: &[i16], b: &[i16]) -> i64 {
    let mut acc = i32x4::ZERO;
    for (ca, cb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        acc += lanes(ca).dot(lanes(cb));
    }
    widen_sum(acc)
}

/// Two dot products against the same window, loading each piece of the window once.
#[inline]
fn dot2(a0: &[i16], a1: &[i16], b: &[i16]) -> (i64, i64) {
    let (mut s0, mut s1) = (i32x4::ZERO, i32x4::ZERO);
    for ((c0, c1), cb) in a0.chunks_exact(LANES).zip(a1.chunks_exact(LANES)).zip(b.chunks_exact(LANES)) {
        let cb = lanes(cb);
        s0 += lanes(c0).dot(cb);
        s1 += lanes(c1).dot(cb);
    }
    (widen_sum(s0), widen_sum(s1))
}

#[inline(always)]
fn widen_sum(v: i32x4) -> i64 {
    v.to_array().iter().map(|&x| i64::from(x)).sum()
}

#[inline(always)]
fn lanes(chunk: &[i16]) -> i16x8 {
    let mut a = [0i16; LANES];
    a.copy_from_slice(chunk);
    i16x8::from(a)
}

/// Whether this CPU has AVX2, asked once per resampler (the standard library caches it).
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The dot products on AVX2's `vpmaddwd`: sixteen `i16` products summed pairwise into eight
/// `i32` lanes per instruction, twice the baseline's width. Phases are padded to a multiple
/// of [`LANES`] (8), so a phase is whole 16-tap chunks and at most one 8-tap chunk, done on
/// the 128-bit form. Each accumulator lane sums a subset of the taps one lane of [`dot`]
/// sums (the positions `2j, 2j + 1` of every sixteen, or of the last eight), so the bound
/// that keeps those from overflowing (checked in `accumulator_cannot_overflow`) holds here
/// too, and the result is exactly the baseline's.
///
/// Calling `filter` is `unsafe` because it is compiled for AVX2; `process` calls it only for a
/// resampler whose `avx2` flag `is_x86_feature_detected!("avx2")` set (the one `unsafe` in
/// the workspace, allowed in this module alone: the workspace lints `deny` it).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm_add_epi32, _mm_madd_epi16, _mm256_add_epi32, _mm256_add_epi64, _mm256_castsi256_si128,
        _mm256_cvtepi32_epi64, _mm256_extracti128_si256, _mm256_madd_epi16,
    };

    use super::{LANES, Resampler};

    /// [`Resampler::filter`] on AVX2, for a resampler that found it on this CPU.
    pub(super) fn process(r: &mut Resampler, out: &mut Vec<i16>) {
        assert!(r.avx2, "the AVX2 kernel runs only where the CPU has AVX2");
        // SAFETY: `r.avx2` is set only from `has_avx2()`, `is_x86_feature_detected!("avx2")`
        // (`Resampler::new`), so this CPU runs AVX2 instructions.
        unsafe { filter(r, out) }
    }

    /// [`Resampler::filter`] with AVX2 dot products (the closures inherit the target feature,
    /// and everything is inlined into this one function).
    #[target_feature(enable = "avx2")]
    fn filter(r: &mut Resampler, out: &mut Vec<i16>) {
        r.filter(out, |a, b| dot(a, b), |a0, a1, b| dot2(a0, a1, b));
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn load16(chunk: &[i16]) -> __m256i {
        let a: [i16; 2 * LANES] = chunk.try_into().expect("a 16-sample chunk");
        bytemuck::cast(a)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn load8(chunk: &[i16]) -> __m128i {
        let a: [i16; LANES] = chunk.try_into().expect("an 8-sample chunk");
        bytemuck::cast(a)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn sum(wide: __m256i, tail: __m128i) -> i64 {
        // Widened to i64 four lanes at a time, then four scalar adds. (A loop over the lanes
        // compiled to a scalar state machine that took more time than the dot product.)
        let low = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(wide));
        let high = _mm256_cvtepi32_epi64(_mm256_extracti128_si256::<1>(wide));
        let rest = _mm256_cvtepi32_epi64(tail);
        let v: [i64; 4] = bytemuck::cast(_mm256_add_epi64(_mm256_add_epi64(low, high), rest));
        v[0] + v[1] + v[2] + v[3]
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn dot(a: &[i16], b: &[i16]) -> i64 {
        let mut acc: __m256i = bytemuck::cast([0i32; 8]);
        let mut tail: __m128i = bytemuck::cast([0i32; 4]);
        let (a16, a8) = a.split_at(a.len() / (2 * LANES) * (2 * LANES));
        let (b16, b8) = b.split_at(a16.len());
        for (ca, cb) in a16.chunks_exact(2 * LANES).zip(b16.chunks_exact(2 * LANES)) {
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(load16(ca), load16(cb)));
        }
        if !a8.is_empty() {
            tail = _mm_madd_epi16(load8(a8), load8(b8));
        }
        sum(acc, tail)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn dot2(a0: &[i16], a1: &[i16], b: &[i16]) -> (i64, i64) {
        let zero: __m256i = bytemuck::cast([0i32; 8]);
        let (mut s0, mut s1) = (zero, zero);
        let (mut t0, mut t1): (__m128i, __m128i) = (bytemuck::cast([0i32; 4]), bytemuck::cast([0i32; 4]));
        let whole = a0.len() / (2 * LANES) * (2 * LANES);
        for ((c0, c1), cb) in a0[..whole]
            .chunks_exact(2 * LANES)
            .zip(a1[..whole].chunks_exact(2 * LANES))
            .zip(b[..whole].chunks_exact(2 * LANES))
        {
            let cb = load16(cb);
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(load16(c0), cb));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(load16(c1), cb));
        }
        if whole < a0.len() {
            let cb = load8(&b[whole..]);
            t0 = _mm_add_epi32(t0, _mm_madd_epi16(load8(&a0[whole..]), cb));
            t1 = _mm_add_epi32(t1, _mm_madd_epi16(load8(&a1[whole..]), cb));
        }
        (sum(s0, t0), sum(s1, t1))
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The filter for one rate pair.
struct Design {
    k: usize,
    taps: Vec<i16>,
    frac_bits: u32,
    delay: usize,
}

impl Design {
    fn new(from: u32, to: u32, l: usize, m: usize) -> Design {
        let high_rate = f64::from(from) * l as f64;
        let nyquist = f64::from(from.min(to)) / 2.0;
        let (pass, stop) = (PASSBAND_EDGE * nyquist, STOPBAND_EDGE * nyquist);
        // Kaiser's formulas for the window shape and the length.
        let a = DESIGN_ATTENUATION_DB;
        let beta = 0.1102 * (a - 8.7);
        let transition = 2.0 * std::f64::consts::PI * (stop - pass) / high_rate;
        let n_min = ((a - 7.95) / (2.285 * transition)).ceil() as usize + 1;
        let k = n_min.div_ceil(l).div_ceil(LANES) * LANES;
        // Use all the length the padding gives, but keep the length odd and the centre on an
        // output sample, so the delay is a whole number of output samples.
        let mut n = l * k;
        while n.is_multiple_of(2) || !((n - 1) / 2).is_multiple_of(m) {
            n -= 1;
        }
        let centre = (n - 1) as f64 / 2.0;
        let cutoff = (pass + stop) / 2.0 / high_rate; // cycles per high-rate sample
        let i0_beta = bessel_i0(beta);
        let h: Vec<f64> = (0..n)
            .map(|i| {
                let t = i as f64 - centre;
                let x = 2.0 * cutoff * t;
                let sinc = if t == 0.0 { 1.0 } else { (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x) };
                let r = t / centre;
                let window = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
                2.0 * cutoff * sinc * window
            })
            .collect();

        // Each phase, normalised to unity DC gain; phase p holds h[p], h[p + l], ...
        let phases: Vec<Vec<f64>> = (0..l)
            .map(|phase| {
                let coeffs: Vec<f64> = (0..k).map(|j| h.get(phase + j * l).copied().unwrap_or(0.0)).collect();
                let sum: f64 = coeffs.iter().sum();
                coeffs.iter().map(|c| c / sum).collect()
            })
            .collect();
        // As many fractional bits as fit: the largest tap must fit an i16, and no lane of the
        // dot product may overflow i32 with full-scale input of the worst sign pattern. Long
        // downsampling filters have small taps, so they get more bits; that is what keeps their
        // quantisation noise under the stopband.
        let frac_bits = (0..=24u32)
            .rev()
            .find(|&bits| {
                let scale = f64::from(1u32 << bits);
                phases.iter().all(|p| {
                    let peak = p.iter().fold(0.0f64, |m, c| m.max(c.abs()));
                    // One count of rounding per tap on top of the exact values.
                    peak * scale < 32000.0
                        && (0..LANES / 2).all(|lane| {
                            let (sum, n) =
                                lane_taps(p.len(), lane).fold((0.0, 0.0), |(s, n), j| (s + p[j].abs(), n + 1.0));
                            (sum * scale + n) * 32768.0 < 2147483647.0
                        })
                })
            })
            .unwrap_or(0);
        let one = 1i64 << frac_bits;
        let mut taps = vec![0i16; l * k];
        for (phase, coeffs) in phases.iter().enumerate() {
            let mut q: Vec<i64> = coeffs.iter().map(|c| (c * one as f64).round() as i64).collect();
            // Put the rounding error on the largest tap so each phase passes DC exactly.
            let err = one - q.iter().sum::<i64>();
            let biggest = (0..k).max_by_key(|&j| q[j].abs()).unwrap_or(0);
            q[biggest] += err;
            for (j, &c) in q.iter().enumerate() {
                // Reversed, so taps line up with the input window oldest-first.
                taps[phase * k + (k - 1 - j)] = c.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16;
            }
        }
        Design { k, taps, frac_bits, delay: (n - 1) / 2 / m }
    }
}

/// Indices (in a phase's tap order; the reversal maps lanes onto lanes) of the taps that one
/// `i32` lane of [`dot`] accumulates: `pmaddwd` sums positions `2·lane` and `2·lane + 1` of
/// every group of eight.
fn lane_taps(len: usize, lane: usize) -> impl Iterator<Item = usize> {
    (0..len).filter(move |j| (j % LANES) / 2 == lane)
}

/// The modified Bessel function of the first kind, order 0, by its power series.
pub(crate) fn bessel_i0(x: f64) -> f64 {
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

    fn all_pairs() -> impl Iterator<Item = (u32, u32)> {
        RATES.into_iter().flat_map(|a| RATES.into_iter().map(move |b| (a, b)))
    }

    /// Frequency response of the quantised prototype at `f` Hz, relative to DC, in dB.
    fn response_db(r: &Resampler, f: f64) -> f64 {
        let high_rate = f64::from(r.from) * r.l as f64;
        let w = 2.0 * std::f64::consts::PI * f / high_rate;
        // Reassemble the prototype h[p + j·l] from the reversed phases.
        let (mut re, mut im) = (0.0, 0.0);
        for phase in 0..r.l {
            for j in 0..r.k {
                let c = f64::from(r.taps[phase * r.k + (r.k - 1 - j)]);
                let n = (phase + j * r.l) as f64;
                re += c * (w * n).cos();
                im -= c * (w * n).sin();
            }
        }
        let dc = f64::from(1u32 << r.frac_bits) * r.l as f64;
        20.0 * ((re * re + im * im).sqrt() / dc).log10()
    }

    #[test]
    fn designed_response_meets_the_mask_for_every_pair() {
        for (from, to) in all_pairs().filter(|(a, b)| a != b) {
            let r = Resampler::new(from, to).unwrap();
            let high_rate = f64::from(from) * r.l as f64;
            let nyquist = f64::from(from.min(to)) / 2.0;
            let mut f = 0.0;
            while f <= 0.9 * nyquist {
                let db = response_db(&r, f);
                assert!(db.abs() <= 0.5, "{from}->{to}: {db:.3} dB at {f} Hz");
                f += 25.0;
            }
            let mut f = nyquist;
            while f <= high_rate / 2.0 {
                let db = response_db(&r, f);
                assert!(db <= -60.0, "{from}->{to}: only {db:.1} dB at {f} Hz");
                f += 10.0;
            }
        }
    }

    #[test]
    fn accumulator_cannot_overflow() {
        for (from, to) in all_pairs() {
            let r = Resampler::new(from, to).unwrap();
            for phase in r.taps.chunks(r.k) {
                for lane in 0..LANES / 2 {
                    let abs: i64 = lane_taps(phase.len(), lane).map(|j| i64::from(phase[j]).abs()).sum();
                    assert!(abs * 32768 <= i64::from(i32::MAX), "{from}->{to}");
                }
            }
        }
    }

    /// Whatever kernel this CPU runs (AVX2 on most x86-64 machines) gives exactly the
    /// baseline's samples, for every pair, over full-scale noise, both extremes and their
    /// alternation, cut into frames of varying length.
    #[test]
    fn every_kernel_gives_the_same_samples() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut noise = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as i16
        };
        let mut input: Vec<i16> = (0..4000).map(|_| noise()).collect();
        input.extend([i16::MAX; 500]);
        input.extend([i16::MIN; 500]);
        input.extend((0..1000).map(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN }));
        for (from, to) in all_pairs() {
            let mut fast = Resampler::new(from, to).unwrap();
            let mut base = fast.clone().portable();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let mut rest = &input[..];
            let mut n = 1;
            while !rest.is_empty() {
                let (frame, tail) = rest.split_at(n.min(rest.len()));
                fast.process(frame, &mut a);
                base.process(frame, &mut b);
                rest = tail;
                n = n * 7 % 331 + 1;
            }
            assert_eq!(a, b, "{from}->{to} (AVX2 here: {})", fast.uses_avx2());
        }
    }

    #[test]
    fn rejects_unsupported_rates() {
        assert_eq!(Resampler::new(44100, 8000).unwrap_err(), CodecError::UnsupportedRate(44100));
        assert!(Resampler::new(8000, 0).is_err());
    }
}
