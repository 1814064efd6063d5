//! In-band DTMF detection with Goertzel filters, to ITU-T Q.24's acceptance rules.
//!
//! The signal is cut into 8 ms blocks (64 samples at 8 kHz). For each block, a Goertzel
//! filter at each of the eight DTMF frequencies gives that frequency's complex amplitude, and
//! the block is a *hit* for the strongest row and column tones if
//! - each tone is above a minimum level (−40 dBFS peak),
//! - the **twist** is within limits: the high tone at most 8 dB above the low one (forward
//!   twist) and at most 4 dB below it (reverse twist),
//! - the two tones hold at least 60 % of the block's energy (what is left is speech, music or
//!   noise). This also makes a block only partly covered by a tone fail, which the timing below
//!   relies on.
//!
//! Four consecutive hits for the same pair (32 ms) make a candidate, which is *confirmed* by
//! looking at those 32 ms as a whole:
//! - **frequency**: the phase advance of each tone's Goertzel output from block to block
//!   measures its frequency to a fraction of a hertz, far finer than the 125 Hz resolution of
//!   one block; a tone more than 2.5 % off nominal is rejected (Q.24: ±1.5 % must be accepted,
//!   ±3.5 % rejected);
//! - **relative peak**: with a Hann window over the 32 ms (31 Hz resolution), each tone must
//!   stand at least 10 dB above every other frequency of its group;
//! - **second harmonic**: energy at twice each tone's frequency must be at least 20 dB below the
//!   tone (real DTMF is two pure sines; a voice that happens to hit a DTMF frequency has
//!   harmonics). The low tone's harmonic is not checked when it lies within 90 Hz of the
//!   detected high tone, as it does for `2` (1394 vs 1336 Hz), `3`, `6` and `C`: the high tone itself
//!   would read as a harmonic there.
//!
//! Timing, with 8 ms blocks and four hits to confirm: a tone of 40 ms or more always covers four
//! whole blocks, so it is detected; a tone of 23 ms or less covers at most two whole blocks and
//! two partial ones that cannot both be 60 % covered, so it is not. Once a digit is reported,
//! it ends only after three consecutive blocks without it (at least 17 ms of something else),
//! so an interruption of up to 10 ms, which spoils at most two blocks, does not make the digit
//! repeat, while a pause of 40 ms always ends it.

use std::collections::VecDeque;
use std::f64::consts::PI;

use wide::f32x8;

use super::{COL_HZ, Digit, ROW_HZ};
use crate::CodecError;
use crate::resample::RATES;

/// Blocks per second: 8 ms blocks.
const BLOCKS_PER_SECOND: u32 = 125;
/// Consecutive hits that make a candidate digit.
const CONFIRM_BLOCKS: usize = 4;
/// Consecutive misses that end a reported digit.
const END_MISSES: usize = 3;
/// Minimum peak amplitude of each tone, as a fraction of full scale (−40 dBFS).
const MIN_AMPLITUDE: f32 = 0.01;
/// How far the high tone may be above the low one, in dB.
const MAX_FORWARD_TWIST_DB: f32 = 8.0;
/// How far the high tone may be below the low one, in dB.
const MAX_REVERSE_TWIST_DB: f32 = 4.0;
/// Share of a block's energy the two tones must hold.
const MIN_TONE_SHARE: f32 = 0.6;
/// How far each tone must stand above the rest of its group, in dB.
const MIN_RELATIVE_PEAK_DB: f64 = 10.0;
/// How far below its tone a second harmonic must be, in dB.
const MIN_HARMONIC_REJECTION_DB: f64 = 20.0;
/// Largest accepted frequency error, as a fraction of nominal (between Q.24's 1.5 % and 3.5 %).
const MAX_FREQUENCY_ERROR: f64 = 0.025;
/// A low tone's harmonic this close to the detected high tone is not checked.
const HARMONIC_MASK_HZ: f64 = 90.0;

/// The eight DTMF frequencies: rows then columns.
const FREQS: [f64; 8] = [ROW_HZ[0], ROW_HZ[1], ROW_HZ[2], ROW_HZ[3], COL_HZ[0], COL_HZ[1], COL_HZ[2], COL_HZ[3]];

/// The eight Goertzel filters, one per DTMF frequency, run together in the lanes of one
/// `f32x8` (two SSE2 registers on the x86-64 baseline): each lane does a scalar filter's
/// arithmetic in the same order, so the results are the same, for a quarter of the
/// instructions (the detector runs on every sample of every native call's audio).
#[derive(Debug, Clone, Copy)]
struct Goertzel {
    coeff: f32x8,
    cos: [f32; 8],
    sin: [f32; 8],
    s1: f32x8,
    s2: f32x8,
}

impl Goertzel {
    fn new(freqs: [f64; 8], rate: u32) -> Goertzel {
        let w = freqs.map(|f| 2.0 * PI * f / f64::from(rate));
        Goertzel {
            coeff: f32x8::from(w.map(|w| (2.0 * w.cos()) as f32)),
            cos: w.map(|w| w.cos() as f32),
            sin: w.map(|w| w.sin() as f32),
            s1: f32x8::ZERO,
            s2: f32x8::ZERO,
        }
    }

    /// `s = x − s₂ + c·s₁`, with `x − s₂` first: it does not wait for the previous sample's
    /// result, so only a multiply and an add do (a fifth less time per sample than
    /// `x + c·s₁ − s₂`; the same filter to within a rounding).
    #[inline]
    fn push(&mut self, x: f32) {
        let s = (f32x8::splat(x) - self.s2) + self.coeff * self.s1;
        self.s2 = self.s1;
        self.s1 = s;
    }

    /// The block's DFT at each frequency, times a phase factor that is the same every block.
    /// The filters run on a copy of the detector's, which stay at rest, so nothing is reset.
    fn dft(self) -> [(f32, f32); 8] {
        let (s1, s2) = (self.s1.to_array(), self.s2.to_array());
        std::array::from_fn(|i| (s1[i] - self.cos[i] * s2[i], self.sin[i] * s2[i]))
    }
}

/// A block's filters' results.
#[derive(Debug, Clone, Copy)]
struct Analysis {
    /// Complex amplitude at each of the eight frequencies.
    dft: [(f32, f32); 8],
    /// Mean power of the block's samples.
    mean_power: f32,
}

impl Analysis {
    /// What a quiet block counts as: nothing at all.
    const QUIET: Analysis = Analysis { dft: [(0.0, 0.0); 8], mean_power: 0.0 };
}

/// What one block showed.
#[derive(Debug, Clone, Copy)]
struct Block {
    /// Complex amplitude at each of the eight frequencies.
    dft: [(f32, f32); 8],
}

/// Finds DTMF digits in a stream of linear audio. Feed it any amount at a time; it carries its
/// state across calls.
#[derive(Debug, Clone)]
pub struct Detector {
    rate: u32,
    block_len: usize,
    /// The filters at rest (each block runs a copy).
    filters: Goertzel,
    /// A block whose samples all stay under this in magnitude cannot hold a hit: it skips
    /// the filters ([`Detector::end_block`]).
    silent_below: i32,
    in_block: usize,
    /// The last `CONFIRM_BLOCKS` blocks of samples, oldest first once `history_pos` wraps.
    history: Vec<i16>,
    history_pos: usize,
    /// Hann window over `history`.
    window: Vec<f32>,
    recent: VecDeque<Block>,
    candidate: Option<(usize, usize)>,
    run: usize,
    active: Option<Digit>,
    misses: usize,
}

impl Detector {
    /// A detector for audio at `sample_rate` Hz (8000, 16000, 24000 or 48000).
    pub fn new(sample_rate: u32) -> Result<Detector, CodecError> {
        if !RATES.contains(&sample_rate) {
            return Err(CodecError::UnsupportedRate(sample_rate));
        }
        let block_len = (sample_rate / BLOCKS_PER_SECOND) as usize;
        let span = block_len * CONFIRM_BLOCKS;
        let window =
            (0..span).map(|i| (0.5 - 0.5 * (2.0 * PI * (i as f64 + 0.5) / span as f64).cos()) as f32).collect();
        Ok(Detector {
            rate: sample_rate,
            block_len,
            filters: Goertzel::new(FREQS, sample_rate),
            // A peak whose square is a quarter of one tone's minimum power: 115, −49 dBFS.
            silent_below: (f64::from(MIN_AMPLITUDE) / 8f64.sqrt() * 32768.0) as i32,
            in_block: 0,
            history: vec![0; span],
            history_pos: 0,
            window,
            recent: VecDeque::with_capacity(CONFIRM_BLOCKS + 1),
            candidate: None,
            run: 0,
            active: None,
            misses: 0,
        })
    }

    /// The sample rate this detector expects.
    pub fn sample_rate(&self) -> u32 {
        self.rate
    }

    /// Analyses `samples`, appending each newly detected digit to `digits` once, when it has
    /// lasted long enough to count.
    pub fn process(&mut self, samples: &[i16], digits: &mut Vec<Digit>) {
        let mut rest = samples;
        while !rest.is_empty() {
            let (now, later) = rest.split_at((self.block_len - self.in_block).min(rest.len()));
            self.remember(now);
            rest = later;
            if self.in_block < self.block_len {
                continue;
            }
            let block = self.last_block();
            if self.is_quiet(block) {
                self.end_block(Analysis::QUIET, digits);
                continue;
            }
            match rest.get(..self.block_len) {
                // The next block is whole in what is left: the two blocks' filters run
                // together, two independent recurrences in one loop, each with the same
                // arithmetic as alone. A 20 ms frame holds two or three 8 ms blocks.
                Some(next) if !self.is_quiet(next) => {
                    let [first, second] = self.analyse([block, next]);
                    self.end_block(first, digits);
                    self.remember(next);
                    rest = &rest[self.block_len..];
                    self.end_block(second, digits);
                }
                _ => {
                    let [analysis] = self.analyse([block]);
                    self.end_block(analysis, digits);
                }
            }
        }
    }

    /// Into the history ring, which the block's end reads (and a candidate's confirmation).
    /// Blocks tile the ring, so a block's piece never wraps.
    fn remember(&mut self, piece: &[i16]) {
        let pos = self.history_pos;
        self.history[pos..pos + piece.len()].copy_from_slice(piece);
        self.history_pos = (pos + piece.len()) % self.history.len();
        self.in_block += piece.len();
    }

    /// The block just completed: the history ring's last `block_len` samples.
    fn last_block(&self) -> &[i16] {
        let start = if self.history_pos == 0 { self.history.len() } else { self.history_pos } - self.block_len;
        &self.history[start..start + self.block_len]
    }

    /// Forgets everything heard so far.
    pub fn reset(&mut self) {
        *self = Detector::new(self.rate).expect("the rate was valid before");
    }

    /// Whether `block` is too quiet to hold a hit: one bin's power estimate is at most twice
    /// the block's mean power (Cauchy–Schwarz), which is at most its peak squared, so a
    /// block whose peak squared is under a quarter of one tone's minimum power cannot be a
    /// hit, and it counts as a miss at once (with a factor of two to spare, far more than
    /// the filters' rounding). Silence and quiet noise, much of a call, then cost a look at
    /// the block's largest and smallest sample (eight lanes at a time) instead of eight
    /// filters' serial recurrences.
    fn is_quiet(&self, block: &[i16]) -> bool {
        peak(block) < self.silent_below
    }

    /// The DFT at the eight frequencies and the mean power of each of `N` blocks that are
    /// not quiet (one, or the two a frame has whole). It runs the filters with the same
    /// results as when they ran sample by sample in [`Detector::process`], now over whole
    /// blocks at once on copies of the filters kept in registers: a third less time on
    /// continuous audio (`cargo bench --bench codecs -- dtmf`: 31 µs → 21 µs for its 8 kHz
    /// clip). Each filter's recurrence waits on its last sample, so two blocks' run side by
    /// side in the time of about one: a fifth less again (17 µs).
    fn analyse<const N: usize>(&self, blocks: [&[i16]; N]) -> [Analysis; N] {
        let n = self.block_len;
        let blocks = blocks.map(|b| &b[..n]);
        // The filters and the energies in one loop (independent dependency chains).
        let (mut filters, mut energy) = ([self.filters; N], [0.0f32; N]);
        for i in 0..n {
            for ((f, e), block) in filters.iter_mut().zip(&mut energy).zip(&blocks) {
                let x = f32::from(block[i]) / 32768.0;
                f.push(x);
                *e += x * x;
            }
        }
        std::array::from_fn(|b| Analysis { dft: filters[b].dft(), mean_power: energy[b] / n as f32 })
    }

    /// The decisions at the end of the block just completed, from its analysis.
    fn end_block(&mut self, Analysis { dft, mean_power }: Analysis, digits: &mut Vec<Digit>) {
        let n = self.block_len as f32;
        // Tone power (A²/2) estimated from each DFT bin.
        let power = |(re, im): (f32, f32)| 2.0 * (re * re + im * im) / (n * n);
        let powers: [f32; 8] = std::array::from_fn(|i| power(dft[i]));
        self.in_block = 0;

        let row = argmax(&powers[..4]);
        let col = argmax(&powers[4..]);
        let (pr, pc) = (powers[row], powers[4 + col]);
        let min_power = MIN_AMPLITUDE * MIN_AMPLITUDE / 2.0;
        let twist_db = 10.0 * (pc / pr).log10();
        let hit = pr >= min_power
            && pc >= min_power
            && (-MAX_REVERSE_TWIST_DB..=MAX_FORWARD_TWIST_DB).contains(&twist_db)
            && pr + pc >= MIN_TONE_SHARE * mean_power;
        let hit = hit.then_some((row, col));

        self.recent.push_back(Block { dft });
        if self.recent.len() > CONFIRM_BLOCKS {
            self.recent.pop_front();
        }
        match hit {
            Some(pair) if self.candidate == Some(pair) => self.run += 1,
            Some(pair) => {
                self.candidate = Some(pair);
                self.run = 1;
            }
            None => {
                self.candidate = None;
                self.run = 0;
            }
        }
        if let Some(digit) = self.active {
            if hit == Some(digit.position()) {
                self.misses = 0;
            } else {
                self.misses += 1;
                if self.misses >= END_MISSES {
                    self.active = None;
                }
            }
        }
        if self.active.is_none()
            && self.run >= CONFIRM_BLOCKS
            && let Some((row, col)) = self.candidate
            && self.confirm(row, col)
        {
            let digit = Digit::at(row, col);
            self.active = Some(digit);
            self.misses = 0;
            digits.push(digit);
        }
    }

    /// The checks over the whole 32 ms of a candidate.
    fn confirm(&self, row: usize, col: usize) -> bool {
        let Some(row_hz) = self.measured_frequency(row) else {
            return false;
        };
        let Some(col_hz) = self.measured_frequency(4 + col) else {
            return false;
        };
        for (measured, nominal) in [(row_hz, FREQS[row]), (col_hz, FREQS[4 + col])] {
            if ((measured - nominal) / nominal).abs() > MAX_FREQUENCY_ERROR {
                return false;
            }
        }

        let powers: [f64; 8] = std::array::from_fn(|i| self.windowed_power(FREQS[i]));
        let peak = 10f64.powf(MIN_RELATIVE_PEAK_DB / 10.0);
        let stands_out = |best: usize, group: std::ops::Range<usize>| {
            group.filter(|&i| i != best).all(|i| powers[best] >= peak * powers[i])
        };
        if !stands_out(row, 0..4) || !stands_out(4 + col, 4..8) {
            return false;
        }

        let harmonic = 10f64.powf(-MIN_HARMONIC_REJECTION_DB / 10.0);
        let col_nominal = FREQS[4 + col];
        if self.windowed_power(2.0 * col_nominal) > harmonic * powers[4 + col] {
            return false;
        }
        let row_harmonic = 2.0 * FREQS[row];
        if (row_harmonic - col_hz).abs() >= HARMONIC_MASK_HZ
            && self.windowed_power(row_harmonic) > harmonic * powers[row]
        {
            return false;
        }
        true
    }

    /// A tone's frequency from the phase advance of bin `i` across the recent blocks: the
    /// advance from one block to the next is `2π · f · block_len / rate`, modulo 2π.
    fn measured_frequency(&self, i: usize) -> Option<f64> {
        let nominal = FREQS[i];
        let block_seconds = self.block_len as f64 / f64::from(self.rate);
        let expected = 2.0 * PI * nominal * block_seconds;
        let mut total = 0.0;
        let mut count = 0;
        for pair in self.recent.iter().collect::<Vec<_>>().windows(2) {
            let (a, b) = (pair[0].dft[i], pair[1].dft[i]);
            let (ar, ai, br, bi) = (f64::from(a.0), f64::from(a.1), f64::from(b.0), f64::from(b.1));
            // arg(b · conj(a))
            let advance = (bi * ar - br * ai).atan2(br * ar + bi * ai);
            total += wrap(advance - expected);
            count += 1;
        }
        (count > 0).then(|| nominal + total / count as f64 / (2.0 * PI * block_seconds))
    }

    /// Hann-windowed power at `freq` over the last 32 ms (relative units).
    fn windowed_power(&self, freq: f64) -> f64 {
        let w = 2.0 * PI * freq / f64::from(self.rate);
        let span = self.history.len();
        let (mut re, mut im) = (0.0f64, 0.0f64);
        for k in 0..span {
            let sample = f32::from(self.history[(self.history_pos + k) % span]) / 32768.0;
            let x = f64::from(sample * self.window[k]);
            let (s, c) = (w * k as f64).sin_cos();
            re += x * c;
            im -= x * s;
        }
        re * re + im * im
    }
}

/// The largest magnitude in `block` (a max and a min, which vectorise on SSE2).
fn peak(block: &[i16]) -> i32 {
    let max = block.iter().copied().max().unwrap_or(0);
    let min = block.iter().copied().min().unwrap_or(0);
    i32::from(max).max(-i32::from(min))
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// `x` wrapped into (−π, π].
fn wrap(x: f64) -> f64 {
    let y = x.rem_euclid(2.0 * PI);
    if y > PI { y - 2.0 * PI } else { y }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filters in SIMD lanes give, bit for bit, what eight scalar Goertzel filters give
    /// (the detector's thresholds were set on the scalar ones).
    #[test]
    fn the_lanes_compute_what_scalar_filters_compute() {
        for rate in [8000, 16000] {
            let rest = Goertzel::new(FREQS, rate);
            let mut bank = rest;
            let consts = FREQS.map(|f| {
                let w = 2.0 * PI * f / f64::from(rate);
                ((2.0 * w.cos()) as f32, w.cos() as f32, w.sin() as f32)
            });
            let mut scalar = [(0.0f32, 0.0f32); 8];
            // A deterministic mix of two tones and noise-like values, three blocks long.
            let mut seed = 12345u32;
            for block in 0..3 {
                for n in 0..160 {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    let noise = f32::from((seed >> 16) as u16 as i16) / 32768.0;
                    let t = f64::from(n) / f64::from(rate);
                    let x = 0.3 * (2.0 * PI * 697.0 * t).sin() as f32
                        + 0.2 * (2.0 * PI * 1209.0 * t).sin() as f32
                        + 0.1 * noise;
                    bank.push(x);
                    for (i, (s1, s2)) in scalar.iter_mut().enumerate() {
                        let s = (x - *s2) + consts[i].0 * *s1;
                        *s2 = *s1;
                        *s1 = s;
                    }
                }
                let lanes = bank.dft();
                bank = rest;
                for i in 0..8 {
                    let (s1, s2) = scalar[i];
                    let want = (s1 - consts[i].1 * s2, consts[i].2 * s2);
                    assert_eq!(lanes[i].0.to_bits(), want.0.to_bits(), "rate {rate}, block {block}, filter {i}");
                    assert_eq!(lanes[i].1.to_bits(), want.1.to_bits(), "rate {rate}, block {block}, filter {i}");
                    scalar[i] = (0.0, 0.0);
                }
            }
        }
    }
}
