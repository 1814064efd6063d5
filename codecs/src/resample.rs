//! Streaming sample-rate conversion between 8, 16, 24 and 48 kHz by a rational polyphase FIR.
//!
//! Every supported pair is a ratio `L/M` with small integers (2, 3, 6, 3/2 and inverses), so
//! one design covers them all: conceptually upsample by `L`, low-pass at the high rate, keep
//! every `M`th sample; in practice only the taps that meet non-zero input are evaluated
//! (polyphase), so each output sample costs one dot product of `K` taps.
//!
//! The low-pass is an equiripple FIR designed by the Parks–McClellan (Remez exchange)
//! algorithm (the `pm-remez` crate; see Oppenheim & Schafer, *Discrete-Time Signal
//! Processing*, §7.7) with:
//! - passband to 0.9 × the lower Nyquist frequency, flat within ±0.06 dB (±0.5 dB asked);
//! - stopband from the lower Nyquist frequency on, attenuated by at least 62 dB once its taps
//!   are quantised (60 dB asked), so that no image (upsampling) or alias (downsampling)
//!   reaches the output above −60 dB;
//! - linear phase, so the **group delay** is the same at every frequency: exactly
//!   [`Resampler::delay`] output samples: 3.9–4.0 ms when one side is 8 kHz, 1.9–2.0 ms for
//!   16 ↔ 24/48 kHz and 1.2–1.3 ms for 24 ↔ 48 kHz (the transition band, and so the filter,
//!   scale with the lower rate).
//!
//! For the same mask an equiripple filter needs about a quarter fewer taps than the
//! Kaiser-windowed sinc this module used before (64 against 88 per phase at 8 → 16 kHz),
//! and so a quarter less delay. A design takes milliseconds, so each pair's is made once per
//! process, on first use, and shared.
//!
//! Taps are fixed point (15 or 16 fractional bits, as many as each design allows) and the
//! dot product runs on `i16 × i16 → i32` with SSE2's `pmaddwd` on baseline x86-64 (NEON on
//! AArch64), through the `wide` crate's safe SIMD types, or, where the CPU has AVX2 (asked at
//! run time: the binary is built for the baseline), with its 256-bit `vpmaddwd` (module
//! `avx2`, the same samples); integer upsamplers compute two phases per pass over the input
//! window.
//!
//! State (the last `K − 1` input samples and the output phase) is carried across calls, so a
//! stream cut into 20 ms frames, or into any other pieces, resamples to exactly the same
//! samples as the whole stream at once: there is nothing at frame edges to click.

use std::sync::{Arc, OnceLock};

use pm_remez::{BandSetting, constant, pm_parameters, pm_remez};
use wide::{i16x8, i32x4};

use crate::CodecError;

/// Stopband attenuation asked of every pair: no image (upsampling) or alias (downsampling)
/// reaches the output above −60 dB.
const REQUIRED_ATTENUATION_DB: f64 = 60.0;
/// What the quantised taps must have to spare on top of it.
const QUANTISED_MARGIN_DB: f64 = 2.0;
/// Attenuation the length estimate starts from: 6 dB above the requirement, which the taps'
/// quantisation mostly takes (it adds noise as loud as the equiripple stopband itself to
/// the long 48 kHz filters).
const DESIGN_ATTENUATION_DB: f64 = 66.0;
/// Weight of the stopband's error against the passband's: the passband may ripple five times
/// as much as the stopband leaks, which saves taps. Quantised, that is ±0.06 dB at most, ten
/// times flatter than the ±0.5 dB asked. (Ten times saved eight taps of 128 at 16 → 8 kHz,
/// but ±0.1 dB is a 1 % error in a tone's level, which the hold music's test hears.)
const STOPBAND_WEIGHT: f64 = 5.0;
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
    /// order; shared by every resampler of the pair.
    taps: Arc<[i16]>,
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
                taps: Arc::new([1]),
                frac_bits: 0,
                buf: Vec::new(),
                pos: 0,
                delay: 0,
                avx2: false,
            });
        }
        let design = Design::get(from, to, l, m);
        let mut r = Resampler {
            from,
            to,
            l,
            m,
            k: design.k,
            taps: Arc::clone(&design.taps),
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
    /// For example 63 samples (3.9 ms) for 8 → 16 kHz, 31 samples (3.9 ms) for 16 → 8 kHz,
    /// 47 samples (2.0 ms) for 16 → 24 kHz; never more than 4 ms.
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
        let frac_bits = self.frac_bits;
        self.filter(out, dot, dot2, |sum, out| out.push(to_sample(sum, frac_bits)));
    }

    /// Produces every output the buffered input allows, with the dot products given, and
    /// keeps the `k - 1` samples the next call needs. `emit` turns each dot product's sum,
    /// in output order, into a sample appended to `out` (the AVX2 kernel holds them and
    /// appends four at a time). Inlined into each kernel, so the AVX2 one's dot products
    /// are inlined too.
    #[inline(always)]
    fn filter<S: Copy>(
        &mut self,
        out: &mut Vec<i16>,
        dot: impl Fn(&[i16], &[i16]) -> S,
        dot2: impl Fn(&[i16], &[i16], &[i16]) -> (S, S),
        mut emit: impl FnMut(S, &mut Vec<i16>),
    ) {
        let (l, m, k) = (self.l, self.m, self.k);
        let end = self.buf.len() * l;
        if self.pos < end {
            out.reserve((end - self.pos).div_ceil(m));
        }
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
                    emit(a, out);
                    emit(b, out);
                    p += 2;
                }
                if p < l {
                    emit(dot(&taps[p * k..(p + 1) * k], window), out);
                }
                newest += 1;
            }
        } else {
            // Walk the input index and phase incrementally; a division per output would cost
            // as much as a quarter of the dot product.
            while newest < buf.len() {
                let window = &buf[newest + 1 - k..=newest];
                emit(dot(&taps[phase * k..(phase + 1) * k], window), out);
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
/// the 128-bit form.
///
/// Lane `j` and lane `j + 4` of the accumulator, and lane `j` of the 8-tap chunk's, sum the
/// taps lane `j` of the baseline's [`dot`] sums (positions `2j, 2j + 1` of every eight), so
/// adding them in `i32` cannot overflow either (the bound checked in
/// `accumulator_cannot_overflow`). That leaves each dot product as four `i32` sums, the
/// baseline's own lanes. The four are added in `i64`, rounded and saturated to a sample four
/// dot products at a time, all in vector registers: done one at a time through scalar
/// registers, that reduction took more time than the products themselves. The samples are
/// exactly the baseline's.
///
/// Calling `filter` is `unsafe` because it is compiled for AVX2; `process` calls it only for a
/// resampler whose `avx2` flag `is_x86_feature_detected!("avx2")` set (the one `unsafe` in
/// the workspace, allowed in this module alone: the workspace lints `deny` it).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm_add_epi32, _mm_cvtsi32_si128, _mm_madd_epi16, _mm_packs_epi32, _mm256_add_epi32,
        _mm256_add_epi64, _mm256_castsi256_si128, _mm256_cvtepi32_epi64, _mm256_extracti128_si256, _mm256_madd_epi16,
        _mm256_permute2x128_si256, _mm256_permutevar8x32_epi32, _mm256_set1_epi64x, _mm256_setr_epi32,
        _mm256_srl_epi64, _mm256_unpackhi_epi64, _mm256_unpacklo_epi64,
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
    ///
    /// Downsamplers and 2× upsamplers (8 ↔ 16 kHz, the default bot's) first make whole
    /// blocks of four outputs whose dot products share their loads: a downsampler's four
    /// windows one tap chunk, a 2× upsampler's two phases two windows. That halved their
    /// time again. The rest (what is left after the last block, and the other ratios) goes
    /// through `Resampler::filter`.
    #[target_feature(enable = "avx2")]
    fn filter(r: &mut Resampler, out: &mut Vec<i16>) {
        let mut held = Held::new(r.frac_bits);
        if r.l == 1 {
            down_blocks(r, &held, out);
        } else if r.l == 2 && r.m == 1 {
            up2_blocks(r, &held, out);
        }
        r.filter(out, |a, b| dot(a, b), |a0, a1, b| dot2(a0, a1, b), |sum, out| held.push(sum, out));
        held.flush(out);
    }

    /// Outputs of a downsampler (`l == 1`: one phase) four at a time: windows `m` input
    /// samples apart against the same taps. Leaves `r.pos` at the first output not made.
    #[target_feature(enable = "avx2")]
    fn down_blocks(r: &mut Resampler, held: &Held, out: &mut Vec<i16>) {
        let (k, m) = (r.k, r.m);
        let (taps, buf) = (&r.taps[..k], &r.buf[..]);
        let mut newest = r.pos;
        while newest + 3 * m < buf.len() {
            let w = |i: usize| &buf[newest + i * m + 1 - k..=newest + i * m];
            out.extend_from_slice(&held.samples(dot4(taps, [w(0), w(1), w(2), w(3)]))[..4]);
            newest += 4 * m;
        }
        r.pos = newest;
    }

    /// Outputs of a 2× upsampler (`l == 2`, `m == 1`) four at a time: both phases of two
    /// consecutive input samples. Leaves `r.pos` at the first output not made.
    #[target_feature(enable = "avx2")]
    fn up2_blocks(r: &mut Resampler, held: &Held, out: &mut Vec<i16>) {
        let k = r.k;
        let (p0, p1) = r.taps[..2 * k].split_at(k);
        let buf = &r.buf[..];
        let mut newest = r.pos / 2;
        while newest + 1 < buf.len() {
            let window = &buf[newest + 1 - k..=newest + 1];
            out.extend_from_slice(&held.samples(dot2x2(p0, p1, window))[..4]);
            newest += 2;
        }
        r.pos = newest * 2;
    }

    /// Up to four dot products' lanes waiting to be made samples together.
    struct Held {
        sums: [__m128i; 4],
        len: usize,
        /// Half of one in the taps' fixed point, added before the shift so it rounds.
        half: __m256i,
        /// The shift, as `_mm256_srl_epi64` takes it.
        shift: __m128i,
    }

    impl Held {
        #[inline]
        #[target_feature(enable = "avx2")]
        fn new(frac_bits: u32) -> Held {
            // The shifted sums' low halves are the samples (below) only for shifts of 1 to 32.
            assert!((1..=32).contains(&frac_bits), "taps have 1 to 32 fractional bits");
            let zero: __m128i = bytemuck::cast([0i32; 4]);
            Held {
                sums: [zero; 4],
                len: 0,
                half: _mm256_set1_epi64x(1 << (frac_bits - 1)),
                shift: _mm_cvtsi32_si128(frac_bits as i32),
            }
        }

        #[inline]
        #[target_feature(enable = "avx2")]
        fn push(&mut self, sum: __m128i, out: &mut Vec<i16>) {
            self.sums[self.len] = sum;
            self.len += 1;
            if self.len == 4 {
                out.extend_from_slice(&self.samples(self.sums)[..4]);
                self.len = 0;
            }
        }

        #[inline]
        #[target_feature(enable = "avx2")]
        fn flush(&mut self, out: &mut Vec<i16>) {
            if self.len > 0 {
                let samples = self.samples(self.sums);
                out.extend_from_slice(&samples[..self.len]);
                self.len = 0;
            }
        }

        /// The samples of four dot products' lanes, in order, each `(Σ + half) >> frac_bits`
        /// saturated to `i16`, as [`super::to_sample`] does (the last four are copies).
        #[inline]
        #[target_feature(enable = "avx2")]
        fn samples(&self, sums: [__m128i; 4]) -> [i16; 8] {
            let [a, b, c, d] = sums.map(|s| _mm256_cvtepi32_epi64(s));
            // [a0 + a1, b0 + b1, a2 + a3, b2 + b3], the same for c and d.
            let ab = _mm256_add_epi64(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
            let cd = _mm256_add_epi64(_mm256_unpacklo_epi64(c, d), _mm256_unpackhi_epi64(c, d));
            // [Σa, Σb, Σc, Σd] in i64.
            let total =
                _mm256_add_epi64(_mm256_permute2x128_si256::<0x20>(ab, cd), _mm256_permute2x128_si256::<0x31>(ab, cd));
            // A logical shift: its low 32 bits are the arithmetic shift's for shifts up to 32,
            // and the shifted sums fit an i32 (four i32 lanes shifted by at least one).
            let shifted = _mm256_srl_epi64(_mm256_add_epi64(total, self.half), self.shift);
            let low =
                _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(shifted, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
            bytemuck::cast(_mm_packs_epi32(low, low))
        }
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

    /// The baseline's four lanes: the two halves of the 16-tap chunks' lanes and the 8-tap
    /// chunk's.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn lanes(wide: __m256i, tail: __m128i) -> __m128i {
        _mm_add_epi32(_mm_add_epi32(_mm256_castsi256_si128(wide), _mm256_extracti128_si256::<1>(wide)), tail)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn dot(a: &[i16], b: &[i16]) -> __m128i {
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
        lanes(acc, tail)
    }

    /// Four dot products of the same taps, `taps · windows[i]`, each a whole number of chunks
    /// as in [`dot`]; the taps are loaded once for all four.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn dot4(taps: &[i16], windows: [&[i16]; 4]) -> [__m128i; 4] {
        let k = taps.len();
        let whole = k / (2 * LANES) * (2 * LANES);
        let zero: __m256i = bytemuck::cast([0i32; 8]);
        let (mut s0, mut s1, mut s2, mut s3) = (zero, zero, zero, zero);
        let [w0, w1, w2, w3] = windows.map(|w| w[..whole].chunks_exact(2 * LANES));
        for ((((t, w0), w1), w2), w3) in taps[..whole].chunks_exact(2 * LANES).zip(w0).zip(w1).zip(w2).zip(w3) {
            let t = load16(t);
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(t, load16(w0)));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(t, load16(w1)));
            s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(t, load16(w2)));
            s3 = _mm256_add_epi32(s3, _mm256_madd_epi16(t, load16(w3)));
        }
        let tail = |i: usize| -> __m128i {
            if whole < k {
                _mm_madd_epi16(load8(&taps[whole..]), load8(&windows[i][whole..k]))
            } else {
                bytemuck::cast([0i32; 4])
            }
        };
        [lanes(s0, tail(0)), lanes(s1, tail(1)), lanes(s2, tail(2)), lanes(s3, tail(3))]
    }

    /// Two phases' taps against two windows one sample apart (`window` holds both: `k + 1`
    /// samples), in output order: `a0·w0, a1·w0, a0·w1, a1·w1`; each tap chunk is loaded once.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn dot2x2(a0: &[i16], a1: &[i16], window: &[i16]) -> [__m128i; 4] {
        let k = a0.len();
        let whole = k / (2 * LANES) * (2 * LANES);
        let zero: __m256i = bytemuck::cast([0i32; 8]);
        let (mut s0, mut s1, mut s2, mut s3) = (zero, zero, zero, zero);
        let (w0, w1) = (&window[..k], &window[1..=k]);
        for (((c0, c1), x0), x1) in a0[..whole]
            .chunks_exact(2 * LANES)
            .zip(a1[..whole].chunks_exact(2 * LANES))
            .zip(w0[..whole].chunks_exact(2 * LANES))
            .zip(w1[..whole].chunks_exact(2 * LANES))
        {
            let (c0, c1, x0, x1) = (load16(c0), load16(c1), load16(x0), load16(x1));
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(c0, x0));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(c1, x0));
            s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(c0, x1));
            s3 = _mm256_add_epi32(s3, _mm256_madd_epi16(c1, x1));
        }
        let tail = |a: &[i16], w: &[i16]| -> __m128i {
            if whole < k { _mm_madd_epi16(load8(&a[whole..]), load8(&w[whole..])) } else { bytemuck::cast([0i32; 4]) }
        };
        [lanes(s0, tail(a0, w0)), lanes(s1, tail(a1, w0)), lanes(s2, tail(a0, w1)), lanes(s3, tail(a1, w1))]
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn dot2(a0: &[i16], a1: &[i16], b: &[i16]) -> (__m128i, __m128i) {
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
            t0 = _mm_madd_epi16(load8(&a0[whole..]), cb);
            t1 = _mm_madd_epi16(load8(&a1[whole..]), cb);
        }
        (lanes(s0, t0), lanes(s1, t1))
    }
}

/// Designs every pair's filter now, the telephone's 8 ↔ 16 kHz first (the default bot's),
/// so that no call waits for one. A design is made on first use otherwise: 3–33 ms of the
/// runtime worker that starts the first call of its pair (8 → 48 kHz the longest), and of
/// any other worker whose call needs the same pair meanwhile (it waits for the first).
/// All twelve take about 120 ms of one core; the gateway runs this on a thread of its own
/// as it starts.
pub fn design_all() {
    let mut pairs: Vec<(u32, u32)> =
        RATES.iter().flat_map(|&from| RATES.iter().map(move |&to| (from, to))).filter(|(f, t)| f != t).collect();
    pairs.sort_by_key(|&(from, to)| from.max(to));
    for (from, to) in pairs {
        let _ = Resampler::new(from, to);
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The filter for one rate pair, designed once per process and shared by every resampler of
/// that pair.
struct Design {
    k: usize,
    taps: Arc<[i16]>,
    frac_bits: u32,
    delay: usize,
}

/// Every pair's design, indexed by the two rates' places in [`RATES`].
static DESIGNS: [OnceLock<Design>; RATES.len() * RATES.len()] = [const { OnceLock::new() }; RATES.len() * RATES.len()];

impl Design {
    /// The design for `from → to`, made on first use. A design takes 10–50 ms (longer for the
    /// longer 48 kHz filters), once per pair per process.
    fn get(from: u32, to: u32, l: usize, m: usize) -> &'static Design {
        let place = |rate| RATES.iter().position(|&r| r == rate).expect("a supported rate");
        DESIGNS[place(from) * RATES.len() + place(to)].get_or_init(|| Design::new(from, to, l, m))
    }

    fn new(from: u32, to: u32, l: usize, m: usize) -> Design {
        let high_rate = f64::from(from) * l as f64;
        let nyquist = f64::from(from.min(to)) / 2.0;
        // Band edges in cycles per high-rate sample.
        let (pass, stop) = (PASSBAND_EDGE * nyquist / high_rate, STOPBAND_EDGE * nyquist / high_rate);
        let bands = [
            BandSetting::new(0.0, pass, constant(1.0)).expect("a valid passband"),
            BandSetting::with_weight(stop, 0.5, constant(0.0), constant(STOPBAND_WEIGHT)).expect("a valid stopband"),
        ];
        // Kaiser's estimate of an equiripple filter's length for the attenuation asked, then
        // longer, a lane at a time, until the quantised taps meet it.
        let stop_ripple = 10f64.powf(-DESIGN_ATTENUATION_DB / 20.0);
        let pass_ripple = stop_ripple * STOPBAND_WEIGHT;
        let n_est = (-10.0 * (pass_ripple * stop_ripple).log10() - 13.0) / (14.6 * (stop - pass)) + 1.0;
        let first = (n_est.ceil() as usize).div_ceil(l).div_ceil(LANES) * LANES;
        let mut k = first;
        loop {
            // Every supported pair meets it at the estimate's length (the mask test designs
            // them all). Past twice that, the quantisation's own noise, not the length, would
            // be what stops it: a change to the constants above that a test must catch.
            assert!(k <= 2 * first, "{from} -> {to} Hz: no design meets the stopband by {k} taps a phase");
            // Use all the length the padding gives, but keep the length odd and the centre on
            // an output sample, so the delay is a whole number of output samples.
            let mut n = l * k;
            while n.is_multiple_of(2) || !((n - 1) / 2).is_multiple_of(m) {
                n -= 1;
            }
            let parameters = pm_parameters(n, &bands).expect("valid filter parameters");
            let h = pm_remez(&parameters).expect("the exchange converges for every supported pair").impulse_response;
            let (taps, frac_bits) = quantise(&h, l, k);
            let design = Design { k, taps: taps.into(), frac_bits, delay: (n - 1) / 2 / m };
            let worst = (0..)
                .map(|i| stop + i as f64 / (16 * n) as f64)
                .take_while(|&f| f <= 0.5)
                .map(|f| design.response_db(l, f))
                .fold(f64::NEG_INFINITY, f64::max);
            if worst <= -REQUIRED_ATTENUATION_DB - QUANTISED_MARGIN_DB {
                return design;
            }
            k += LANES;
        }
    }

    /// The response, relative to DC, at `f` cycles per high-rate sample of the prototype
    /// filter the `l` quantised phases make up, in dB.
    fn response_db(&self, l: usize, f: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * f;
        let (mut re, mut im) = (0.0, 0.0);
        for phase in 0..l {
            for j in 0..self.k {
                let c = f64::from(self.taps[phase * self.k + (self.k - 1 - j)]);
                let (sin, cos) = (w * (phase + j * l) as f64).sin_cos();
                re += c * cos;
                im -= c * sin;
            }
        }
        let dc = f64::from(1u32 << self.frac_bits) * l as f64;
        20.0 * ((re * re + im * im).sqrt() / dc).log10()
    }
}

/// The prototype `h` as `l` phases of `k` fixed-point taps each, phase `p` holding
/// `h[p], h[p + l], ...` reversed (so taps line up with the input window oldest-first), with
/// as many fractional bits as fit; returns the taps and their fractional bits.
///
/// The whole is scaled so the phases' DC gains average one. Each phase keeps its own gain,
/// within the stopband's ripple of one: scaling each to exactly one would move the passband's
/// ripple into the images.
fn quantise(h: &[f64], l: usize, k: usize) -> (Vec<i16>, u32) {
    let scale = l as f64 / h.iter().sum::<f64>();
    let phases: Vec<Vec<f64>> =
        (0..l).map(|phase| (0..k).map(|j| h.get(phase + j * l).map_or(0.0, |c| c * scale)).collect()).collect();
    // The largest tap must fit an i16, and no lane of the dot product may overflow i32 with
    // full-scale input of the worst sign pattern. Long downsampling filters have small taps,
    // so they get more bits; that is what keeps their quantisation noise under the stopband.
    let frac_bits = (0..=24u32)
        .rev()
        .find(|&bits| {
            let scale = f64::from(1u32 << bits);
            phases.iter().all(|p| {
                let peak = p.iter().fold(0.0f64, |m, c| m.max(c.abs()));
                // One count of rounding per tap on top of the exact values.
                peak * scale < 32000.0
                    && (0..LANES / 2).all(|lane| {
                        let (sum, n) = lane_taps(p.len(), lane).fold((0.0, 0.0), |(s, n), j| (s + p[j].abs(), n + 1.0));
                        (sum * scale + n) * 32768.0 < 2147483647.0
                    })
            })
        })
        .unwrap_or(0);
    let one = f64::from(1u32 << frac_bits);
    let mut taps = vec![0i16; l * k];
    for (phase, coeffs) in phases.iter().enumerate() {
        for (j, &c) in coeffs.iter().enumerate() {
            taps[phase * k + (k - 1 - j)] = (c * one).round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
        }
    }
    (taps, frac_bits)
}

/// Indices (in a phase's tap order; the reversal maps lanes onto lanes) of the taps that one
/// `i32` lane of [`dot`] accumulates: `pmaddwd` sums positions `2·lane` and `2·lane + 1` of
/// every group of eight.
fn lane_taps(len: usize, lane: usize) -> impl Iterator<Item = usize> {
    (0..len).filter(move |j| (j % LANES) / 2 == lane)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_pairs() -> impl Iterator<Item = (u32, u32)> {
        RATES.into_iter().flat_map(|a| RATES.into_iter().map(move |b| (a, b)))
    }

    /// Frequency response of the quantised prototype at `f` Hz, relative to DC, in dB.
    fn response_db(r: &Resampler, f: f64) -> f64 {
        let design = Design { k: r.k, taps: Arc::clone(&r.taps), frac_bits: r.frac_bits, delay: r.delay };
        design.response_db(r.l, f / (f64::from(r.from) * r.l as f64))
    }

    #[test]
    fn design_all_designs_every_pair() {
        super::design_all();
        for (i, from) in RATES.iter().enumerate() {
            for (j, to) in RATES.iter().enumerate() {
                let designed = DESIGNS[i * RATES.len() + j].get().is_some();
                assert_eq!(designed, from != to, "{from} → {to}");
            }
        }
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
