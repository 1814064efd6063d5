//! Throughput of `switchboard-codecs`: samples per second for each codec, the resampler and
//! the DTMF detector, and the per-call-leg transcoding pipeline at 20 ms framing, from which
//! BENCHMARKS.md derives how many concurrent call legs one core can carry.
//!
//! Criterion's `Elements` throughput is in samples (of the input); no assertions here, the
//! targets are compared by hand in BENCHMARKS.md.

use std::f64::consts::PI;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use switchboard_codecs::dtmf::{Detector, Digit};
use switchboard_codecs::g711::{alaw, ulaw};
use switchboard_codecs::{Encoding, Format, Resampler, Transcoder, l16};

/// One second of speech-like test audio at `rate`: a few harmonics, so the codecs see a
/// realistic spread of amplitudes rather than one table entry.
fn audio(rate: u32) -> Vec<i16> {
    (0..rate as usize)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let v = 6000.0 * (2.0 * PI * 220.0 * t).sin()
                + 3000.0 * (2.0 * PI * 660.0 * t).sin()
                + 1500.0 * (2.0 * PI * 1870.0 * t).sin();
            v as i16
        })
        .collect()
}

fn g711(c: &mut Criterion) {
    let linear = audio(8000);
    let mut ucodes = Vec::new();
    ulaw::encode_into(&linear, &mut ucodes);
    let mut acodes = Vec::new();
    alaw::encode_into(&linear, &mut acodes);

    let mut g = c.benchmark_group("g711");
    g.throughput(Throughput::Elements(linear.len() as u64));
    let mut samples = Vec::with_capacity(linear.len());
    g.bench_function("ulaw_decode", |b| {
        b.iter(|| {
            samples.clear();
            ulaw::decode_into(black_box(&ucodes), &mut samples);
            black_box(&samples);
        })
    });
    g.bench_function("alaw_decode", |b| {
        b.iter(|| {
            samples.clear();
            alaw::decode_into(black_box(&acodes), &mut samples);
            black_box(&samples);
        })
    });
    let mut codes = Vec::with_capacity(linear.len());
    g.bench_function("ulaw_encode", |b| {
        b.iter(|| {
            codes.clear();
            ulaw::encode_into(black_box(&linear), &mut codes);
            black_box(&codes);
        })
    });
    g.bench_function("alaw_encode", |b| {
        b.iter(|| {
            codes.clear();
            alaw::encode_into(black_box(&linear), &mut codes);
            black_box(&codes);
        })
    });
    g.finish();

    let mut g = c.benchmark_group("l16");
    g.throughput(Throughput::Elements(linear.len() as u64));
    let mut bytes = Vec::with_capacity(linear.len() * 2);
    l16::encode_le(&linear, &mut bytes);
    g.bench_function("decode_le", |b| {
        b.iter(|| {
            samples.clear();
            l16::decode_le(black_box(&bytes), &mut samples).unwrap();
            black_box(&samples);
        })
    });
    let mut out = Vec::with_capacity(linear.len() * 2);
    g.bench_function("encode_le", |b| {
        b.iter(|| {
            out.clear();
            l16::encode_le(black_box(&linear), &mut out);
            black_box(&out);
        })
    });
    g.finish();
}

/// Every pair, fed 20 ms frames as the gateway does; throughput in input samples.
fn resample(c: &mut Criterion) {
    let rates = [8000, 16000, 24000, 48000];
    let mut g = c.benchmark_group("resample");
    for from in rates {
        for to in rates {
            if from == to {
                continue;
            }
            let input = audio(from);
            let frame = from as usize / 50;
            g.throughput(Throughput::Elements(input.len() as u64));
            let fast = Resampler::new(from, to).unwrap();
            // Where the CPU has AVX2, the baseline (SSE2) kernel is measured beside it.
            let kernels = if fast.uses_avx2() {
                vec![(String::new(), fast.clone()), (" sse2".to_string(), fast.portable())]
            } else {
                vec![(String::new(), fast)]
            };
            for (name, mut r) in kernels {
                let mut out = Vec::with_capacity(to as usize / 50 + 8);
                g.bench_function(format!("{from}->{to}{name}"), |b| {
                    b.iter(|| {
                        for chunk in input.chunks(frame) {
                            out.clear();
                            r.process(black_box(chunk), &mut out);
                            black_box(&out);
                        }
                    })
                });
            }
        }
    }
    g.finish();
}

/// `samples` in `format`'s wire encoding.
fn encode(format: Format, samples: &[i16]) -> Vec<u8> {
    let mut out = Vec::new();
    match format.encoding() {
        Encoding::Pcmu => ulaw::encode_into(samples, &mut out),
        Encoding::Pcma => alaw::encode_into(samples, &mut out),
        Encoding::L16 => l16::encode_le(samples, &mut out),
    }
    out
}

/// One call leg's pipeline at 20 ms framing. Input samples per second divided by the input
/// rate is the number of legs one core could carry in that direction.
fn transcode(c: &mut Criterion) {
    let mut g = c.benchmark_group("transcode");
    let cases = [
        (Format::PCMU, Format::L16_16K),
        (Format::L16_16K, Format::PCMU),
        (Format::PCMU, Format::L16_48K),
        (Format::L16_48K, Format::PCMU),
        (Format::PCMA, Format::L16_24K),
        (Format::PCMU, Format::PCMA),
    ];
    for (from, to) in cases {
        let linear = audio(from.sample_rate());
        let wire = encode(from, &linear);
        let frame = from.bytes_per_frame();
        g.throughput(Throughput::Elements(linear.len() as u64));
        let mut t = Transcoder::new(from, to);
        let mut out = Vec::with_capacity(to.bytes_per_frame());
        g.bench_function(format!("{from}->{to}"), |b| {
            b.iter(|| {
                for chunk in wire.chunks(frame) {
                    out.clear();
                    t.process(black_box(chunk), &mut out).unwrap();
                    black_box(&out);
                }
            })
        });
    }
    g.finish();
}

fn dtmf(c: &mut Criterion) {
    let speech = audio(8000);
    let mut g = c.benchmark_group("dtmf");
    g.throughput(Throughput::Elements(speech.len() as u64));
    // The same length of quiet noise (about −63 dBFS): every block skips the filters.
    let mut seed = 0x9e37_79b9u32;
    let quiet: Vec<i16> = (0..speech.len())
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (((seed >> 16) as i32 - 32768) / 512) as i16
        })
        .collect();
    for (name, clip) in [("detect_8k", &speech), ("detect_8k_quiet", &quiet)] {
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || (Detector::new(8000).unwrap(), Vec::<Digit>::new()),
                |(d, digits)| {
                    for chunk in clip.chunks(160) {
                        d.process(black_box(chunk), digits);
                    }
                    black_box(&digits);
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, g711, resample, transcode, dtmf);
criterion_main!(benches);
