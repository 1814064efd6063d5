//! In-band DTMF detection against tones synthesised here: every digit, ITU-T Q.24's timing and
//! frequency-tolerance rules, twist limits, interruptions, noise, and µ-law coding on the way.

use std::f64::consts::PI;

use switchboard_codecs::dtmf::{Detector, Digit, generate};
use switchboard_codecs::g711::ulaw;

const RATE: u32 = 8000;

fn ms(n: f64) -> usize {
    (n * f64::from(RATE) / 1000.0).round() as usize
}

/// Two tones at arbitrary frequencies and peak amplitudes (fractions of full scale).
fn pair(low: f64, high: f64, low_amp: f64, high_amp: f64, len: usize) -> Vec<i16> {
    (0..len)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            let v = low_amp * (2.0 * PI * low * t).sin() + high_amp * (2.0 * PI * high * t).sin();
            (v * 32767.0).round() as i16
        })
        .collect()
}

fn silence(len: usize) -> Vec<i16> {
    vec![0; len]
}

fn detect(samples: &[i16]) -> String {
    let mut d = Detector::new(RATE).unwrap();
    let mut digits = Vec::new();
    // 20 ms frames, as the gateway feeds it.
    for frame in samples.chunks(160) {
        d.process(frame, &mut digits);
    }
    digits.iter().map(|d| d.as_char()).collect()
}

fn digit(c: char) -> Digit {
    Digit::from_char(c).unwrap()
}

#[test]
fn every_digit_is_detected_once() {
    for d in Digit::ALL {
        let mut s = silence(ms(30.0));
        generate(d, RATE, ms(100.0), &mut s);
        s.extend(silence(ms(60.0)));
        assert_eq!(detect(&s), d.as_char().to_string(), "{d}");
    }
}

#[test]
fn a_dialled_sequence_through_ulaw_is_detected_in_order() {
    let sequence = "0123456789*#ABCD5551234";
    let mut s = Vec::new();
    for c in sequence.chars() {
        generate(digit(c), RATE, ms(50.0), &mut s);
        s.extend(silence(ms(50.0)));
    }
    let decoded: Vec<i16> = s.iter().map(|&x| ulaw::decode(ulaw::encode(x))).collect();
    assert_eq!(detect(&decoded), sequence);
}

#[test]
fn works_at_every_gateway_rate() {
    for rate in [8000, 16000, 24000, 48000] {
        let mut d = Detector::new(rate).unwrap();
        let mut s = Vec::new();
        for c in "19#D".chars() {
            generate(digit(c), rate, rate as usize / 20, &mut s);
            s.extend(vec![0; rate as usize / 20]);
        }
        let mut digits = Vec::new();
        d.process(&s, &mut digits);
        let got: String = digits.iter().map(|d| d.as_char()).collect();
        assert_eq!(got, "19#D", "{rate} Hz");
    }
}

/// Q.24: tones of 40 ms or more must be detected, tones of 23 ms or less must not, wherever
/// they fall relative to the detector's blocks.
#[test]
fn q24_duration_40_ms_detected_23_ms_not() {
    for d in Digit::ALL {
        for offset in (0..64).step_by(9) {
            let mut long = silence(ms(20.0) + offset);
            generate(d, RATE, ms(40.0), &mut long);
            long.extend(silence(ms(40.0)));
            assert_eq!(detect(&long), d.as_char().to_string(), "40 ms {d} @ {offset}");

            let mut short = silence(ms(20.0) + offset);
            generate(d, RATE, ms(23.0), &mut short);
            short.extend(silence(ms(40.0)));
            assert_eq!(detect(&short), "", "23 ms {d} @ {offset}");
        }
    }
}

/// Q.24: a frequency error of ±1.5 % must be accepted and one of ±3.5 % rejected, on either
/// tone and in either direction.
#[test]
fn q24_frequency_tolerance() {
    for d in Digit::ALL {
        let (low, high) = d.frequencies();
        for (lf, hf) in [(1.0, 1.015), (1.0, 0.985), (1.015, 1.0), (0.985, 1.0), (1.015, 0.985)] {
            let s = pair(low * lf, high * hf, 0.25, 0.3, ms(60.0));
            assert_eq!(detect(&s), d.as_char().to_string(), "{d} x({lf}, {hf})");
        }
        for (lf, hf) in [(1.0, 1.035), (1.0, 0.965), (1.035, 1.0), (0.965, 1.0)] {
            let s = pair(low * lf, high * hf, 0.25, 0.3, ms(60.0));
            assert_eq!(detect(&s), "", "{d} x({lf}, {hf})");
        }
    }
}

#[test]
fn twist_within_limits_is_accepted_and_beyond_them_rejected() {
    let (low, high) = digit('8').frequencies();
    let db = |x: f64| 10f64.powf(x / 20.0);
    for twist in [-3.0, 0.0, 4.0, 7.0] {
        let s = pair(low, high, 0.2, 0.2 * db(twist), ms(60.0));
        assert_eq!(detect(&s), "8", "twist {twist} dB");
    }
    for twist in [-6.0, 10.0] {
        let s = pair(low, high, 0.2, 0.2 * db(twist), ms(60.0));
        assert_eq!(detect(&s), "", "twist {twist} dB");
    }
}

#[test]
fn single_tones_and_quiet_tones_are_not_digits() {
    for f in [697.0, 941.0, 1209.0, 1633.0, 1000.0] {
        let s = pair(f, f, 0.25, 0.0, ms(100.0));
        assert_eq!(detect(&s), "", "{f} Hz alone");
    }
    let (low, high) = digit('1').frequencies();
    assert_eq!(detect(&pair(low, high, 0.005, 0.005, ms(100.0))), "");
    assert_eq!(detect(&pair(low, high, 0.02, 0.02, ms(100.0))), "1");
}

/// Q.24: a break of up to 10 ms inside a tone is not a new digit; a pause of 40 ms is.
#[test]
fn q24_interruptions_of_10_ms_are_bridged_and_40_ms_pauses_are_not() {
    for offset in (0..64).step_by(5) {
        let mut s = silence(offset);
        generate(digit('7'), RATE, ms(50.0), &mut s);
        s.extend(silence(ms(10.0)));
        generate(digit('7'), RATE, ms(50.0), &mut s);
        s.extend(silence(ms(40.0)));
        assert_eq!(detect(&s), "7", "10 ms break @ {offset}");

        let mut s = silence(offset);
        generate(digit('7'), RATE, ms(50.0), &mut s);
        s.extend(silence(ms(40.0)));
        generate(digit('7'), RATE, ms(50.0), &mut s);
        s.extend(silence(ms(40.0)));
        assert_eq!(detect(&s), "77", "40 ms pause @ {offset}");
    }
}

#[test]
fn detects_in_moderate_noise() {
    // A deterministic pseudo-random noise about 20 dB under the tones.
    let mut seed = 0x1234_5678u32;
    let mut s = Vec::new();
    for c in "42#".chars() {
        generate(digit(c), RATE, ms(60.0), &mut s);
        s.extend(silence(ms(60.0)));
    }
    for x in &mut s {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = ((seed >> 16) as i32 - 32768) / 16; // uniform, about −33 dBFS RMS
        *x = (i32::from(*x) + noise).clamp(-32768, 32767) as i16;
    }
    assert_eq!(detect(&s), "42#");
}

#[test]
fn rejects_unsupported_rates() {
    assert!(Detector::new(11025).is_err());
}

/// Quiet digits (−34 dBFS a tone, 6 dB over the minimum) between stretches of quieter
/// noise: the noise's blocks skip the filters (no hit is possible in them), and nothing
/// else changes.
#[test]
fn quiet_digits_between_quieter_noise_are_detected() {
    let mut seed = 0x9e37_79b9u32;
    let mut quiet = |len: usize, s: &mut Vec<i16>| {
        for _ in 0..len {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            s.push((((seed >> 16) as i32 - 32768) / 512) as i16); // about −63 dBFS RMS
        }
    };
    let mut s = Vec::new();
    quiet(ms(45.0), &mut s);
    for c in "159".chars() {
        let (low, high) = digit(c).frequencies();
        s.extend(pair(low, high, 0.02, 0.02, ms(60.0)));
        quiet(ms(60.0), &mut s);
    }
    assert_eq!(detect(&s), "159");
}
