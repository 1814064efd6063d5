//! Resampler quality measured end to end, on what a listener would notice: tones in the
//! passband keep their level (±0.5 dB up to 0.9 × the lower Nyquist frequency); images and
//! aliases stay at least 60 dB down; the group delay is what `delay()` says; and a stream cut
//! into frames of any size comes out sample-for-sample the same as the whole stream.

use std::f64::consts::PI;

use switchboard_codecs::resample::{RATES, Resampler};

const AMPLITUDE: f64 = 16000.0;

fn pairs() -> Vec<(u32, u32)> {
    let mut v = Vec::new();
    for a in RATES {
        for b in RATES {
            if a != b {
                v.push((a, b));
            }
        }
    }
    v
}

fn tone(rate: u32, freq: f64, seconds: f64) -> Vec<i16> {
    let n = (f64::from(rate) * seconds) as usize;
    (0..n).map(|i| (AMPLITUDE * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()).round() as i16).collect()
}

/// Least-squares fit of `a·cos + b·sin` at `freq` to `y`; returns the fitted amplitude and the
/// RMS of what is left over (everything that is not that tone).
fn fit(y: &[f64], rate: u32, freq: f64) -> (f64, f64) {
    let w = 2.0 * PI * freq / f64::from(rate);
    let (mut cc, mut ss, mut cs, mut yc, mut ys) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (i, &v) in y.iter().enumerate() {
        let (s, c) = (w * i as f64).sin_cos();
        cc += c * c;
        ss += s * s;
        cs += c * s;
        yc += v * c;
        ys += v * s;
    }
    let det = cc * ss - cs * cs;
    let a = (yc * ss - ys * cs) / det;
    let b = (ys * cc - yc * cs) / det;
    let residual: f64 = y
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let (s, c) = (w * i as f64).sin_cos();
            (v - a * c - b * s).powi(2)
        })
        .sum::<f64>()
        / y.len() as f64;
    ((a * a + b * b).sqrt(), residual.sqrt())
}

fn resample_all(from: u32, to: u32, input: &[i16]) -> Vec<i16> {
    let mut r = Resampler::new(from, to).unwrap();
    let mut out = Vec::new();
    r.process(input, &mut out);
    out
}

/// The output once the filter has filled (skips twice the delay).
fn settled(out: &[i16], r: &Resampler) -> Vec<f64> {
    out[2 * r.delay() + 8..].iter().map(|&s| f64::from(s)).collect()
}

#[test]
fn passband_is_flat_within_half_a_db_and_images_are_60_db_down() {
    for (from, to) in pairs() {
        let r = Resampler::new(from, to).unwrap();
        let nyquist = f64::from(from.min(to)) / 2.0;
        for fraction in [0.02, 0.1, 0.25, 0.5, 0.75, 0.85, 0.9] {
            let f = fraction * nyquist;
            let out = resample_all(from, to, &tone(from, f, 0.06));
            let (amp, residual) = fit(&settled(&out, &r), to, f);
            let gain_db = 20.0 * (amp / AMPLITUDE).log10();
            assert!(gain_db.abs() <= 0.5, "{from}->{to}: {gain_db:.3} dB at {f} Hz");
            // Whatever is not the tone: images (upsampling) and rounding noise.
            let rest_db = 20.0 * (residual / (AMPLITUDE / 2f64.sqrt())).log10();
            assert!(rest_db <= -60.0, "{from}->{to}: {rest_db:.1} dB of images at {f} Hz");
        }
    }
}

/// Up to the very edge of the band, images of a tone just below the lower Nyquist land just
/// above it, in the stopband, and must be 60 dB under the input tone.
#[test]
fn images_of_tones_near_nyquist_are_60_db_down() {
    for (from, to) in pairs().into_iter().filter(|(a, b)| b > a) {
        let r = Resampler::new(from, to).unwrap();
        let nyquist = f64::from(from) / 2.0;
        for fraction in [0.95, 0.98, 0.995] {
            let f = fraction * nyquist;
            let out = resample_all(from, to, &tone(from, f, 0.06));
            let (_, residual) = fit(&settled(&out, &r), to, f);
            let rest_db = 20.0 * (residual / (AMPLITUDE / 2f64.sqrt())).log10();
            assert!(rest_db <= -60.0, "{from}->{to}: images at {rest_db:.1} dB for {f} Hz");
        }
    }
}

/// Downsampling: a tone the output rate cannot carry must vanish, not fold back as an alias.
#[test]
fn tones_above_the_output_nyquist_alias_at_least_60_db_down() {
    for (from, to) in pairs().into_iter().filter(|(a, b)| b < a) {
        let r = Resampler::new(from, to).unwrap();
        let nyquist = f64::from(to) / 2.0;
        let top = f64::from(from) / 2.0;
        let mut f = nyquist;
        while f < top {
            let out = resample_all(from, to, &tone(from, f, 0.04));
            let y = settled(&out, &r);
            let rms = (y.iter().map(|v| v * v).sum::<f64>() / y.len() as f64).sqrt();
            let db = 20.0 * (rms.max(1e-9) / (AMPLITUDE / 2f64.sqrt())).log10();
            assert!(db <= -60.0, "{from}->{to}: {f} Hz leaks through at {db:.1} dB");
            f += (top - nyquist) / 7.0;
        }
    }
}

/// The filter is linear-phase: an impulse comes out centred exactly `delay()` samples later.
#[test]
fn group_delay_is_as_stated() {
    for (from, to) in pairs() {
        let mut r = Resampler::new(from, to).unwrap();
        let mut input = vec![0i16; f64::from(from) as usize / 50];
        input[0] = 16000;
        let mut out = Vec::new();
        r.process(&input, &mut out);
        let peak = (0..out.len()).max_by_key(|&i| out[i]).unwrap();
        assert_eq!(peak, r.delay(), "{from}->{to}");
        let ms = r.delay() as f64 * 1000.0 / f64::from(to);
        assert!(ms <= 4.0, "{from}->{to}: {ms} ms");
    }
}

/// No clicks at frame edges: state carries across calls, so 20 ms frames, or any other cut,
/// give exactly the samples of one call over the whole stream; and each 20 ms frame in gives
/// exactly 20 ms out.
#[test]
fn streaming_is_seamless() {
    // A chirp-ish signal so every sample matters.
    let sweep = |rate: u32| -> Vec<i16> {
        (0..rate as usize / 5)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (12000.0 * (2.0 * PI * (200.0 + 3000.0 * t) * t).sin()) as i16
            })
            .collect()
    };
    for (from, to) in pairs() {
        let input = sweep(from);
        let whole = resample_all(from, to, &input);

        let mut r = Resampler::new(from, to).unwrap();
        let mut framed = Vec::new();
        let frame_in = from as usize / 50;
        for frame in input.chunks(frame_in) {
            let before = framed.len();
            r.process(frame, &mut framed);
            assert_eq!(framed.len() - before, to as usize / 50, "{from}->{to}");
        }
        assert_eq!(framed, whole, "{from}->{to}: 20 ms frames");

        let mut r = Resampler::new(from, to).unwrap();
        let mut ragged = Vec::new();
        let mut rest = &input[..];
        for size in [1, 0, 7, 2, 333, 64, 3, 1000].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (head, tail) = rest.split_at((*size).min(rest.len()));
            r.process(head, &mut ragged);
            rest = tail;
        }
        assert_eq!(ragged, whole, "{from}->{to}: ragged pieces");
    }
}

#[test]
fn equal_rates_pass_through() {
    let mut r = Resampler::new(16000, 16000).unwrap();
    let mut out = Vec::new();
    r.process(&[1, 2, 3], &mut out);
    assert_eq!(out, [1, 2, 3]);
    assert_eq!(r.delay(), 0);
}

#[test]
fn full_scale_worst_case_input_saturates_instead_of_wrapping() {
    for (from, to) in pairs() {
        let mut r = Resampler::new(from, to).unwrap();
        // Alternating full-scale square wave near Nyquist: maximal ringing.
        let input: Vec<i16> = (0..2000).map(|i| if (i / 2) % 2 == 0 { i16::MAX } else { i16::MIN }).collect();
        let mut out = Vec::new();
        r.process(&input, &mut out);
        assert!(!out.is_empty());
    }
}
