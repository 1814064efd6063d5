//! The per-call-leg pipeline end to end: every pair of gateway formats, 20 ms in giving
//! 20 ms out, a tone surviving the trip, and properties that must hold for any input.

use std::f64::consts::PI;

use proptest::prelude::*;
use switchboard_codecs::dtmf::Detector;
use switchboard_codecs::dtmf::rfc4733::TelephoneEvent;
use switchboard_codecs::g711::{alaw, ulaw};
use switchboard_codecs::{CodecError, Encoding, Format, Framer, Transcoder, l16};

fn encode(format: Format, samples: &[i16]) -> Vec<u8> {
    let mut out = Vec::new();
    match format.encoding() {
        Encoding::Pcmu => ulaw::encode_into(samples, &mut out),
        Encoding::Pcma => alaw::encode_into(samples, &mut out),
        Encoding::L16 => l16::encode_le(samples, &mut out),
    }
    out
}

fn decode(format: Format, bytes: &[u8]) -> Vec<i16> {
    let mut out = Vec::new();
    match format.encoding() {
        Encoding::Pcmu => ulaw::decode_into(bytes, &mut out),
        Encoding::Pcma => alaw::decode_into(bytes, &mut out),
        Encoding::L16 => l16::decode_le(bytes, &mut out).unwrap(),
    }
    out
}

fn tone(rate: u32, freq: f64, len: usize) -> Vec<i16> {
    (0..len).map(|i| (10000.0 * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as i16).collect()
}

/// Amplitude of `freq` in `x` by projection over whole cycles (good enough for ±1 dB).
fn amplitude(x: &[i16], rate: u32, freq: f64) -> f64 {
    let (mut re, mut im) = (0.0, 0.0);
    for (i, &v) in x.iter().enumerate() {
        let w = 2.0 * PI * freq * i as f64 / f64::from(rate);
        re += f64::from(v) * w.cos();
        im += f64::from(v) * w.sin();
    }
    2.0 * (re * re + im * im).sqrt() / x.len() as f64
}

#[test]
fn every_pair_gives_20_ms_out_for_20_ms_in_and_keeps_a_tone() {
    for from in Format::ALL {
        for to in Format::ALL {
            let mut t = Transcoder::new(from, to);
            assert_eq!((t.from(), t.to()), (from, to));
            let input = encode(from, &tone(from.sample_rate(), 1000.0, from.sample_rate() as usize / 5));
            let mut out = Vec::new();
            for frame in input.chunks(from.bytes_per_frame()) {
                let before = out.len();
                t.process(frame, &mut out).unwrap();
                assert_eq!(out.len() - before, to.bytes_per_frame(), "{from} -> {to}");
            }
            let decoded = decode(to, &out);
            // Skip the resampler's start-up, then compare levels over 100 ms.
            let settled = &decoded[decoded.len() / 2..];
            let level = amplitude(settled, to.sample_rate(), 1000.0);
            let db = 20.0 * (level / 10000.0).log10();
            assert!(db.abs() < 0.5, "{from} -> {to}: 1 kHz tone at {db:.2} dB");
        }
    }
}

#[test]
fn same_format_is_a_copy() {
    let mut t = Transcoder::new(Format::PCMU, Format::PCMU);
    let mut out = Vec::new();
    t.process(&[1, 2, 3], &mut out).unwrap();
    assert_eq!(out, [1, 2, 3]);
}

#[test]
fn odd_l16_is_a_clear_error() {
    let mut t = Transcoder::new(Format::L16_48K, Format::PCMU);
    let err = t.process(&[0; 1919], &mut Vec::new()).unwrap_err();
    assert_eq!(err, CodecError::OddLength { len: 1919 });
}

fn format() -> impl Strategy<Value = Format> {
    prop::sample::select(Format::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any bytes in any format pair: no panic; L16 input of odd length is the only error; and
    /// feeding the bytes in arbitrary whole-sample pieces gives the same output as at once.
    #[test]
    fn transcoding_any_bytes_in_any_pieces(
        from in format(),
        to in format(),
        bytes in prop::collection::vec(any::<u8>(), 0..3000),
        cuts in prop::collection::vec(0usize..700, 0..8),
    ) {
        let mut whole = Vec::new();
        let result = Transcoder::new(from, to).process(&bytes, &mut whole);
        let width = from.encoding().bytes_per_sample();
        if bytes.len() % width != 0 {
            prop_assert_eq!(result, Err(CodecError::OddLength { len: bytes.len() }));
            prop_assert!(whole.is_empty());
            return Ok(());
        }
        prop_assert!(result.is_ok());
        let mut t = Transcoder::new(from, to);
        let mut pieced = Vec::new();
        let mut rest = &bytes[..];
        for cut in cuts {
            let n = (cut * width).min(rest.len());
            let (head, tail) = rest.split_at(n);
            t.process(head, &mut pieced).unwrap();
            rest = tail;
        }
        t.process(rest, &mut pieced).unwrap();
        prop_assert_eq!(pieced, whole);
    }

    /// The framer loses and invents nothing: frames plus what is pending are the input.
    #[test]
    fn framer_is_lossless(
        f in format(),
        pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..1000), 0..10),
    ) {
        let mut framer = Framer::new(f);
        let mut frames = Vec::new();
        for p in &pieces {
            framer.push(p);
            for frame in framer.frames() {
                prop_assert_eq!(frame.len(), f.bytes_per_frame());
                frames.extend_from_slice(&frame);
            }
        }
        let input: Vec<u8> = pieces.concat();
        prop_assert_eq!(framer.pending(), input.len() - frames.len());
        prop_assert_eq!(&input[..frames.len()], &frames[..]);
        if let Some(last) = framer.flush() {
            prop_assert_eq!(last.len(), f.bytes_per_frame());
        }
        prop_assert_eq!(framer.pending(), 0);
    }

    #[test]
    fn rfc4733_parse_and_encode_round_trip(bytes in any::<[u8; 4]>()) {
        let e = TelephoneEvent::parse(&bytes).unwrap();
        let mut expected = bytes;
        expected[1] &= !0x40; // the reserved bit is not kept
        prop_assert_eq!(e.to_bytes(), expected);
    }

    #[test]
    fn rfc4733_parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..16)) {
        let r = TelephoneEvent::parse(&bytes);
        prop_assert_eq!(r.is_ok(), bytes.len() == 4);
    }

    #[test]
    fn detector_never_panics(
        samples in prop::collection::vec(any::<i16>(), 0..4000),
        rate in prop::sample::select(vec![8000u32, 16000, 24000, 48000]),
    ) {
        let mut d = Detector::new(rate).unwrap();
        let mut digits = Vec::new();
        d.process(&samples, &mut digits);
        prop_assert!(digits.len() <= samples.len() / 256 + 1);
    }

    /// G.711 quantisation error is within half a step of the input: µ-law steps are at most
    /// 1024 (plus the 4-unit offset of G.191's rounding), A-law at most 1024.
    #[test]
    fn g711_error_is_bounded(x in any::<i16>()) {
        let u = i32::from(ulaw::decode(ulaw::encode(x)));
        let a = i32::from(alaw::decode(alaw::encode(x)));
        let x = i32::from(x);
        // Beyond µ-law's ±32124 and A-law's ±32256 the codes saturate.
        prop_assert!((u - x).abs() <= 516.max((x.abs() - 32124 + 516).max(0)));
        prop_assert!((a - x).abs() <= 512.max((x.abs() - 32256 + 512).max(0)));
        // Sign is kept (0 aside).
        prop_assert!(u * x >= 0 && a * x >= 0);
    }
}
