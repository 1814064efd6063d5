//! DTMF detection against audio from generators nobody here wrote: sox's `synth` for tones,
//! and espeak-ng for speech, which must never be taken for digits (talk-off).
//!
//! These tests need `sox` and `espeak-ng`; they fail (rather than skip) when either is
//! missing, because a skipped talk-off test looks like a passing one. Install them with
//! `scripts/codecs-test-deps.sh`.

use std::io::Write;
use std::process::{Command, Stdio};

use switchboard_codecs::dtmf::{Detector, Digit};
use switchboard_codecs::g711::ulaw;

/// Runs `program` with `args`, feeding `stdin`, and returns its stdout.
fn run(program: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `{program}` ({e}): install the test tools with scripts/codecs-test-deps.sh")
        });
    let mut input = child.stdin.take().expect("piped stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // A program that does not read stdin closes it early; that is not an error here.
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for child");
    writer.join().expect("stdin writer");
    assert!(out.status.success(), "`{program} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn samples(raw: &[u8]) -> Vec<i16> {
    raw.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

/// sox: a tone pair of `seconds` at `gain_db` per tone, then `pause` seconds of silence, as
/// 16-bit little-endian mono at `rate`.
fn sox_pair(rate: u32, low: f64, high: f64, seconds: f64, pause: f64) -> Vec<i16> {
    let (rate, low, high) = (rate.to_string(), low.to_string(), high.to_string());
    let (seconds, pause) = (seconds.to_string(), pause.to_string());
    samples(&run(
        "sox",
        &[
            "-n",
            "-r",
            &rate,
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-L",
            "-t",
            "raw",
            "-",
            "synth",
            &seconds,
            "sin",
            &low,
            "sin",
            &high,
            "channels",
            "1",
            "gain",
            "-6",
            "pad",
            "0",
            &pause,
        ],
        &[],
    ))
}

fn detect(rate: u32, audio: &[i16]) -> String {
    let mut d = Detector::new(rate).unwrap();
    let mut digits = Vec::new();
    for frame in audio.chunks(rate as usize / 50) {
        d.process(frame, &mut digits);
    }
    digits.iter().map(|d| d.as_char()).collect()
}

fn through_ulaw(audio: &[i16]) -> Vec<i16> {
    audio.iter().map(|&x| ulaw::decode(ulaw::encode(x))).collect()
}

#[test]
fn sox_tones_are_detected_for_every_digit() {
    let sequence = "0123456789*#ABCD";
    for rate in [8000, 16000] {
        let mut audio = Vec::new();
        for c in sequence.chars() {
            let (low, high) = Digit::from_char(c).unwrap().frequencies();
            audio.extend(sox_pair(rate, low, high, 0.06, 0.06));
        }
        assert_eq!(detect(rate, &audio), sequence, "{rate} Hz");
        if rate == 8000 {
            assert_eq!(detect(rate, &through_ulaw(&audio)), sequence, "µ-law");
        }
    }
}

#[test]
fn sox_tones_meet_q24_duration_and_frequency_rules() {
    for c in ['1', '5', '9', '0', 'D'] {
        let (low, high) = Digit::from_char(c).unwrap().frequencies();
        let expect = c.to_string();
        assert_eq!(detect(8000, &sox_pair(8000, low, high, 0.040, 0.05)), expect, "40 ms {c}");
        assert_eq!(detect(8000, &sox_pair(8000, low, high, 0.023, 0.05)), "", "23 ms {c}");
        for (lf, hf) in [(1.015, 1.015), (0.985, 0.985), (1.015, 0.985)] {
            let audio = sox_pair(8000, low * lf, high * hf, 0.06, 0.05);
            assert_eq!(detect(8000, &audio), expect, "{c} at x({lf}, {hf})");
        }
        for (lf, hf) in [(1.035, 1.0), (0.965, 1.0), (1.0, 1.035), (1.0, 0.965)] {
            let audio = sox_pair(8000, low * lf, high * hf, 0.06, 0.05);
            assert_eq!(detect(8000, &audio), "", "{c} at x({lf}, {hf})");
        }
    }
}

const SPEECH: &[&str] = &[
    "Thank you for calling. Your call is important to us. Please stay on the line and the \
     next available agent will be with you shortly.",
    "My account number is one two three four five six seven eight nine zero, and my phone \
     number is five five five, eight six seven, five three zero nine.",
    "I would like to speak to someone about my home loan, the interest rate went up again \
     last month and nobody told me why.",
    "Hello? Hello, can you hear me? I'm calling about the delivery that was supposed to \
     arrive on Tuesday, the fourteenth of February.",
    "Oh, oh, oooh, eee, aaah, mmmm, hmm, yes yes yes, no no no, okay, alright, sure thing.",
];

/// Voices and pitches span low male to high female, where talk-off is likeliest.
const VOICES: &[(&str, &str)] = &[
    ("en-us", "20"),
    ("en-us", "50"),
    ("en-gb", "70"),
    ("en-us+f3", "60"),
    ("en-us+f4", "90"),
    ("en-gb-scotland", "40"),
];

fn speech(voice: &str, pitch: &str, text: &str, rate: u32) -> Vec<i16> {
    let wav = run("espeak-ng", &["-v", voice, "-p", pitch, "--stdout", text], &[]);
    let rate = rate.to_string();
    samples(&run(
        "sox",
        &["-t", "wav", "-", "-r", &rate, "-c", "1", "-b", "16", "-e", "signed-integer", "-L", "-t", "raw", "-"],
        &wav,
    ))
}

#[test]
fn speech_does_not_talk_off_digits() {
    let mut seconds = 0.0;
    for &(voice, pitch) in VOICES {
        for text in SPEECH {
            let audio = speech(voice, pitch, text, 8000);
            assert!(audio.len() > 8000, "espeak-ng produced no speech");
            seconds += audio.len() as f64 / 8000.0;
            assert_eq!(detect(8000, &audio), "", "{voice} p{pitch}: {text}");
            assert_eq!(detect(8000, &through_ulaw(&audio)), "", "µ-law {voice}: {text}");
        }
    }
    assert!(seconds > 60.0, "only {seconds:.0} s of speech tested");
}

#[test]
fn speech_does_not_talk_off_digits_at_16_khz() {
    for &(voice, pitch) in &VOICES[..3] {
        let audio = speech(voice, pitch, SPEECH[1], 16000);
        assert_eq!(detect(16000, &audio), "", "{voice} p{pitch}");
    }
}

/// Digits dialled over speech (a caller pressing keys while talking) are still found.
#[test]
fn digits_over_quiet_speech_are_detected() {
    let talk = speech("en-us", "50", SPEECH[0], 8000);
    let mut tones = Vec::new();
    for c in "2580".chars() {
        let (low, high) = Digit::from_char(c).unwrap().frequencies();
        tones.extend(sox_pair(8000, low, high, 0.08, 0.2));
    }
    let mixed: Vec<i16> = tones
        .iter()
        .zip(talk.iter().cycle())
        .map(|(&t, &s)| (i32::from(t) + i32::from(s) / 8).clamp(-32768, 32767) as i16)
        .collect();
    assert_eq!(detect(8000, &mixed), "2580");
}
