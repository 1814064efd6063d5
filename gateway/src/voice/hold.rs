//! Hold audio: what a caller hears while waiting in a queue.
//!
//! Either a prompt from a WAV file named by the workstream's `hold_audio`, or by default a
//! soft comfort tone (a 440 Hz beep of 200 ms every 2 s over quiet silence), looped.
//!
//! A prompt is decoded once, when the configuration is loaded (`crate::load::hold_prompt`, with
//! `hound`): integer PCM of 8, 16, 24 or 32 bits or 32-bit float, plain or
//! WAVE_FORMAT_EXTENSIBLE, mono or stereo (mixed down to mono), at any rate from 1 to
//! 384 kHz, up to [`MAX_HOLD_SECS`] long. A rate the telephony resampler does not know
//! (44.1 kHz, say) is converted once, with [`switchboard_codecs::clip`], to the nearest
//! telephony rate above it (48 kHz at most). Each caller format then gets its 20 ms frames
//! once, the first time a call in that format needs them, and every later call shares them:
//! a call does no file IO, decoding or resampling.

use std::io::Read;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use switchboard_codecs::{Encoding, Format, Framer, Transcoder, clip};

/// The longest hold prompt taken, in seconds (it is kept in memory, per caller format).
pub const MAX_HOLD_SECS: u32 = 600;

/// Telephony rates a prompt is kept at, lowest first (the streaming resampler's rates).
const PROMPT_RATES: [u32; 4] = [8000, 16000, 24000, 48000];

/// Looping hold audio in one call's format, 20 ms at a time. Cloning shares the frames.
#[derive(Debug, Clone)]
pub struct HoldAudio {
    frames: Arc<Vec<Bytes>>,
}

fn comfort_tone(rate: u32) -> Vec<i16> {
    let n = rate as usize * 2;
    let beep = rate as usize / 5;
    (0..n)
        .map(|i| {
            if i < beep {
                let t = i as f64 / f64::from(rate);
                // A short fade in and out avoids clicks at the edges of the beep.
                let env = ((i.min(beep - i) as f64) / (f64::from(rate) * 0.01)).min(1.0);
                (env * 3000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
            } else {
                0
            }
        })
        .collect()
}

/// Where `format`'s frames are cached: a [`Format`] is always one of [`Format::ALL`].
fn slot(format: Format) -> usize {
    Format::ALL.iter().position(|&f| f == format).expect("a Format is one of Format::ALL")
}

impl HoldAudio {
    /// The default comfort tone in `format`, made once per format for the process.
    pub fn tone(format: Format) -> HoldAudio {
        static TONES: [OnceLock<HoldAudio>; 6] = [const { OnceLock::new() }; 6];
        TONES[slot(format)]
            .get_or_init(|| {
                let rate = format.sample_rate();
                let l16 = Format::new(Encoding::L16, rate).expect("L16 exists at every telephony rate");
                Self::from_linear(&comfort_tone(rate), l16, format)
            })
            .clone()
    }

    /// `samples` (linear, in `from`, an L16 format) converted to `format` and cut into 20 ms
    /// frames, the last one padded with silence. The resampler's delay is flushed and
    /// skipped, so the frames hold the whole clip and nothing else.
    fn from_linear(samples: &[i16], from: Format, format: Format) -> HoldAudio {
        let rate = from.sample_rate();
        let to = format.sample_rate();
        let mut t = Transcoder::new(from, format);
        let delay = t.delay();
        // Enough silence after the clip to push its end out of the filter.
        let pad = (delay as u64 * u64::from(rate)).div_ceil(u64::from(to)) as usize + 1;
        let mut pcm = Vec::with_capacity((samples.len() + pad) * 2);
        for s in samples.iter().copied().chain(std::iter::repeat_n(0, pad)) {
            pcm.extend_from_slice(&s.to_le_bytes());
        }
        let mut out = Vec::new();
        // L16 bytes are always whole samples, so this cannot fail.
        let _ = t.process(&pcm, &mut out);
        let bytes = format.encoding().bytes_per_sample();
        let want = (samples.len() as u64 * u64::from(to)).div_ceil(u64::from(rate)) as usize;
        let start = (delay * bytes).min(out.len());
        let end = (start + want * bytes).min(out.len());
        let mut framer = Framer::new(format);
        framer.push(&out[start..end]);
        let mut frames: Vec<Bytes> = framer.frames().collect();
        frames.extend(framer.flush());
        HoldAudio { frames: Arc::new(frames) }
    }

    /// The `i`-th frame of the loop.
    pub fn frame(&self, i: usize) -> Option<Bytes> {
        (!self.frames.is_empty()).then(|| self.frames[i % self.frames.len()].clone())
    }

    /// Frames in one pass of the loop.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when there is nothing to play.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// A decoded WAV file: mono 16-bit linear samples at the file's own rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav {
    pub rate: u32,
    pub samples: Vec<i16>,
}

/// Decodes a WAV file with `hound`: 8/16/24/32-bit integer PCM or 32-bit float, plain or
/// WAVE_FORMAT_EXTENSIBLE, mono or stereo (stereo is averaged to mono), any rate from
/// [`clip::MIN_RATE`] to [`clip::MAX_RATE`], up to [`MAX_HOLD_SECS`] long and not empty.
/// The error is one phrase for a `check-config` line (it does not name the file).
pub fn decode_wav(reader: impl Read) -> Result<Wav, String> {
    let mut r = hound::WavReader::new(std::io::BufReader::new(reader)).map_err(|e| wav_error(&e))?;
    let spec = r.spec();
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 8 | 16 | 24 | 32) | (hound::SampleFormat::Float, 32) => {}
        (hound::SampleFormat::Int, bits) => {
            return Err(format!("{bits}-bit integer samples are not supported{TAKEN}"));
        }
        (hound::SampleFormat::Float, bits) => {
            return Err(format!("{bits}-bit float samples are not supported{TAKEN}"));
        }
    }
    let channels = spec.channels;
    if !(1..=2).contains(&channels) {
        return Err(format!("{channels} channels: hold audio must be mono or stereo"));
    }
    let rate = spec.sample_rate;
    if !(clip::MIN_RATE..=clip::MAX_RATE).contains(&rate) {
        return Err(format!(
            "sample rate {rate} Hz is not supported: take {} to {} Hz (44100 and 22050 are fine)",
            clip::MIN_RATE,
            clip::MAX_RATE
        ));
    }
    let frames = r.duration();
    if frames == 0 {
        return Err("the file holds no audio (0 samples)".into());
    }
    if u64::from(frames) > u64::from(MAX_HOLD_SECS) * u64::from(rate) {
        let secs = u64::from(frames) / u64::from(rate);
        return Err(format!(
            "{} min {} s long: hold audio may be at most {} minutes",
            secs / 60,
            secs % 60,
            MAX_HOLD_SECS / 60
        ));
    }
    // Every sample as a fraction of full scale, channels averaged.
    let mut mono = Vec::with_capacity(frames as usize);
    let mut push = |values: &mut dyn Iterator<Item = Result<f32, hound::Error>>| -> Result<(), String> {
        let mut acc = 0.0f32;
        let mut n = 0;
        for v in values {
            acc += v.map_err(|e| wav_error(&e))?;
            n += 1;
            if n == channels {
                let s = (acc / f32::from(channels)).clamp(-1.0, 1.0) * 32768.0;
                // NaN (a broken float file) becomes silence.
                mono.push(if s.is_nan() { 0 } else { s.round().clamp(-32768.0, 32767.0) as i16 });
                acc = 0.0;
                n = 0;
            }
        }
        Ok(())
    };
    match spec.sample_format {
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            push(&mut r.samples::<i32>().map(|s| s.map(|s| s as f32 * scale)))?;
        }
        hound::SampleFormat::Float => push(&mut r.samples::<f32>())?,
    }
    Ok(Wav { rate, samples: mono })
}

const TAKEN: &str = " (take 8, 16, 24 or 32-bit integer PCM, or 32-bit float)";

fn wav_error(e: &hound::Error) -> String {
    match e {
        hound::Error::FormatError(why @ ("no RIFF tag found" | "no WAVE tag found")) => {
            format!("not a WAV file ({why})")
        }
        hound::Error::FormatError(why) => format!("malformed WAV file: {why}"),
        hound::Error::Unsupported => {
            format!("compressed or unknown WAV encoding: not supported{TAKEN}")
        }
        // hound reports a short read as "Failed to read enough bytes." (kind Other).
        hound::Error::IoError(io)
            if io.kind() == std::io::ErrorKind::UnexpectedEof || io.to_string().contains("enough bytes") =>
        {
            "the file is cut short (truncated WAV)".into()
        }
        other => format!("cannot decode: {other}"),
    }
}

/// A workstream's hold prompt, decoded once at load: mono samples at a telephony rate, and
/// the 20 ms frames of each caller format, made the first time a call needs them.
pub struct HoldPrompt {
    /// The rate of the WAV file.
    source_rate: u32,
    /// L16 at one of [`PROMPT_RATES`].
    format: Format,
    samples: Vec<i16>,
    /// Frames per caller format, in [`Format::ALL`] order.
    frames: [OnceLock<HoldAudio>; 6],
}

impl std::fmt::Debug for HoldPrompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldPrompt")
            .field("source_rate", &self.source_rate)
            .field("rate", &self.format.sample_rate())
            .field("samples", &self.samples.len())
            .finish_non_exhaustive()
    }
}

impl HoldPrompt {
    /// Decodes a WAV file's bytes (see [`decode_wav`]); `crate::load` opens the file.
    pub fn from_reader(reader: impl Read) -> Result<HoldPrompt, String> {
        Self::from_wav(decode_wav(reader)?)
    }

    /// A prompt from decoded samples at any rate: converted once to a telephony rate, the
    /// lowest at or above the file's (48 kHz for anything higher), so nothing is lost.
    pub fn from_wav(wav: Wav) -> Result<HoldPrompt, String> {
        if wav.samples.is_empty() {
            return Err("the file holds no audio (0 samples)".into());
        }
        let rate = PROMPT_RATES.into_iter().find(|&r| r >= wav.rate).unwrap_or(48000);
        let format = Format::new(Encoding::L16, rate).map_err(|e| e.to_string())?;
        let samples = clip::resample(&wav.samples, wav.rate, rate).map_err(|e| e.to_string())?;
        Ok(HoldPrompt { source_rate: wav.rate, format, samples, frames: [const { OnceLock::new() }; 6] })
    }

    /// The WAV file's own rate.
    pub fn source_rate(&self) -> u32 {
        self.source_rate
    }

    /// The telephony rate the samples are kept at.
    pub fn rate(&self) -> u32 {
        self.format.sample_rate()
    }

    /// The prompt, mono, at [`rate`](Self::rate).
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }

    /// The prompt in `format`: converted on first use for that format, shared after.
    pub fn audio(&self, format: Format) -> HoldAudio {
        self.frames[slot(format)].get_or_init(|| HoldAudio::from_linear(&self.samples, self.format, format)).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn sine(rate: u32, freq: f64, i: usize) -> f64 {
        (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin()
    }

    /// Writes `frames` frames of a 440 Hz sine (0.5 of full scale) in `spec`, with the
    /// right channel at half the left's level.
    fn write_wav(dir: &Path, name: &str, spec: hound::WavSpec, frames: usize) -> std::path::PathBuf {
        let p = dir.join(name);
        let mut w = hound::WavWriter::create(&p, spec).unwrap();
        for i in 0..frames {
            let v = 0.5 * sine(spec.sample_rate, 440.0, i);
            for ch in 0..spec.channels {
                let v = if ch == 0 { v } else { v / 2.0 };
                match spec.sample_format {
                    hound::SampleFormat::Float => w.write_sample(v as f32).unwrap(),
                    hound::SampleFormat::Int => {
                        let full = (1i64 << (spec.bits_per_sample - 1)) as f64;
                        w.write_sample((v * full).round() as i32).unwrap();
                    }
                }
            }
        }
        w.finalize().unwrap();
        p
    }

    fn spec(channels: u16, sample_rate: u32, bits: u16, float: bool) -> hound::WavSpec {
        let sample_format = if float { hound::SampleFormat::Float } else { hound::SampleFormat::Int };
        hound::WavSpec { channels, sample_rate, bits_per_sample: bits, sample_format }
    }

    /// The WAV header's format tag: 1 PCM, 3 IEEE float, 0xFFFE WAVE_FORMAT_EXTENSIBLE.
    fn format_tag(p: &Path) -> u16 {
        let d = std::fs::read(p).unwrap();
        u16::from_le_bytes([d[20], d[21]])
    }

    /// Checks that `samples` (at `rate`) is the 440 Hz sine at `level` of full scale.
    fn assert_sine(samples: &[i16], rate: u32, level: f64) {
        let edge = rate as usize / 50;
        let body = &samples[edge..samples.len() - edge];
        let err: f64 = body
            .iter()
            .enumerate()
            .map(|(i, &s)| (f64::from(s) - level * 32768.0 * sine(rate, 440.0, i + edge)).powi(2))
            .sum::<f64>()
            / body.len() as f64;
        let snr = 10.0 * ((level * 32768.0).powi(2) / 2.0 / err).log10();
        assert!(snr > 45.0, "at {rate} Hz: SNR {snr:.1} dB");
    }

    #[test]
    fn decodes_every_kind_of_wav_a_user_would_give() {
        let dir = tempfile::tempdir().unwrap();
        // (spec, expected format tag, kept rate, mono level: stereo averages 0.5 and 0.25)
        let cases = [
            ("16-bit mono 8 kHz", spec(1, 8000, 16, false), 1, 8000, 0.5),
            ("24-bit stereo 44.1 kHz", spec(2, 44100, 24, false), 0xFFFE, 48000, 0.375),
            ("32-bit float mono 48 kHz", spec(1, 48000, 32, true), 0xFFFE, 48000, 0.5),
            ("8-bit mono 11.025 kHz", spec(1, 11025, 8, false), 1, 16000, 0.5),
            ("16-bit stereo 22.05 kHz", spec(2, 22050, 16, false), 1, 24000, 0.375),
            ("32-bit integer mono 16 kHz", spec(1, 16000, 32, false), 0xFFFE, 16000, 0.5),
            ("16-bit mono 96 kHz", spec(1, 96000, 16, false), 1, 48000, 0.5),
        ];
        for (what, spec, tag, rate, level) in cases {
            let p = write_wav(dir.path(), &format!("{what}.wav"), spec, spec.sample_rate as usize / 2);
            assert_eq!(format_tag(&p), tag, "{what}: the header hound writes");
            let prompt = crate::load::hold_prompt(&p).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!((prompt.source_rate(), prompt.rate()), (spec.sample_rate, rate), "{what}");
            assert_eq!(prompt.samples().len(), rate as usize / 2, "{what}: half a second");
            // 8-bit audio has only 48 dB of range to begin with.
            if spec.bits_per_sample > 8 {
                assert_sine(prompt.samples(), rate, level);
            }
        }
    }

    #[test]
    fn a_plain_ieee_float_header_is_read_too() {
        // hound writes float as WAVE_FORMAT_EXTENSIBLE; other tools write format tag 3.
        let n = 800u32;
        let mut d = Vec::new();
        d.extend_from_slice(b"RIFF");
        d.extend_from_slice(&(36 + n * 4).to_le_bytes());
        d.extend_from_slice(b"WAVEfmt ");
        d.extend_from_slice(&16u32.to_le_bytes());
        d.extend_from_slice(&3u16.to_le_bytes()); // WAVE_FORMAT_IEEE_FLOAT
        d.extend_from_slice(&1u16.to_le_bytes());
        d.extend_from_slice(&8000u32.to_le_bytes());
        d.extend_from_slice(&32000u32.to_le_bytes());
        d.extend_from_slice(&4u16.to_le_bytes());
        d.extend_from_slice(&32u16.to_le_bytes());
        d.extend_from_slice(b"data");
        d.extend_from_slice(&(n * 4).to_le_bytes());
        for i in 0..n as usize {
            d.extend_from_slice(&((0.5 * sine(8000, 440.0, i)) as f32).to_le_bytes());
        }
        let wav = decode_wav(&d[..]).unwrap();
        assert_eq!((wav.rate, wav.samples.len()), (8000, 800));
        assert_sine(&wav.samples, 8000, 0.5);
    }

    #[test]
    fn a_16_bit_mono_telephony_file_is_taken_sample_for_sample() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("exact.wav");
        let mut w = hound::WavWriter::create(&p, spec(1, 16000, 16, false)).unwrap();
        let want: Vec<i16> = (0..3200).map(|i| ((i * 37) % 20000 - 10000) as i16).collect();
        for &s in &want {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        let prompt = crate::load::hold_prompt(&p).unwrap();
        assert_eq!(prompt.samples(), &want[..]);
        // In its own format the frames are exactly those samples, 20 ms each.
        let audio = prompt.audio(Format::L16_16K);
        assert_eq!(audio.len(), 10);
        let bytes: Vec<u8> = want.iter().flat_map(|s| s.to_le_bytes()).collect();
        for i in 0..10 {
            assert_eq!(&audio.frame(i).unwrap()[..], &bytes[i * 640..(i + 1) * 640], "frame {i}");
        }
        assert_eq!(audio.frame(10), audio.frame(0), "it loops");
    }

    #[test]
    fn each_caller_format_gets_whole_frames_once_and_shares_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_wav(dir.path(), "cd.wav", spec(2, 44100, 16, false), 44100);
        let prompt = crate::load::hold_prompt(&p).unwrap();
        for format in Format::ALL {
            let audio = prompt.audio(format);
            // One second is 50 frames, whatever the format.
            assert_eq!(audio.len(), 50, "{format}");
            let f = audio.frame(7).unwrap();
            assert_eq!(f.len(), format.bytes_per_frame(), "{format}");
            assert!(f.iter().any(|&b| b != format.silence_byte()), "{format}: not silent");
            let again = prompt.audio(format);
            assert!(Arc::ptr_eq(&audio.frames, &again.frames), "{format}: converted once");
        }
        // The resampled stream is the sine, not shifted by the resampler's delay.
        let l16: Vec<i16> = (0..50)
            .flat_map(|i| prompt.audio(Format::L16_8K).frame(i).unwrap().to_vec())
            .collect::<Vec<u8>>()
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_sine(&l16, 8000, 0.375);
    }

    #[test]
    fn refuses_what_cannot_be_played_with_a_clear_reason() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.wav");
        std::fs::write(&text, "these are not the samples you are looking for\n").unwrap();
        let empty = write_wav(dir.path(), "empty.wav", spec(1, 8000, 16, false), 0);
        let surround = write_wav(dir.path(), "surround.wav", spec(6, 48000, 16, false), 480);
        let slow = write_wav(dir.path(), "slow.wav", spec(1, 500, 16, false), 500);
        let truncated = dir.path().join("truncated.wav");
        let whole = std::fs::read(write_wav(dir.path(), "whole.wav", spec(1, 8000, 16, false), 8000)).unwrap();
        std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
        let cases = [
            (dir.path().join("missing.wav"), "cannot read: No such file or directory"),
            (dir.path().to_owned(), "cannot read: is a directory"),
            (text, "not a WAV file (no RIFF tag found)"),
            (empty, "the file holds no audio (0 samples)"),
            (surround, "6 channels: hold audio must be mono or stereo"),
            (slow, "sample rate 500 Hz is not supported: take 1000 to 384000 Hz"),
            (truncated, "the file is cut short (truncated WAV)"),
        ];
        for (p, want) in cases {
            let err = crate::load::hold_prompt(&p).unwrap_err();
            assert!(err.starts_with(want), "{}: {err:?}, want {want:?}", p.display());
        }
    }

    #[test]
    fn refuses_a_prompt_over_ten_minutes_without_reading_it() {
        // A header that claims 11 minutes at 1 kHz; the samples are never read.
        let frames = 11 * 60 * 1000u32;
        let mut d = Vec::new();
        d.extend_from_slice(b"RIFF");
        d.extend_from_slice(&(36 + frames * 2).to_le_bytes());
        d.extend_from_slice(b"WAVEfmt ");
        d.extend_from_slice(&16u32.to_le_bytes());
        d.extend_from_slice(&1u16.to_le_bytes());
        d.extend_from_slice(&1u16.to_le_bytes());
        d.extend_from_slice(&1000u32.to_le_bytes());
        d.extend_from_slice(&2000u32.to_le_bytes());
        d.extend_from_slice(&2u16.to_le_bytes());
        d.extend_from_slice(&16u16.to_le_bytes());
        d.extend_from_slice(b"data");
        d.extend_from_slice(&(frames * 2).to_le_bytes());
        let err = decode_wav(&d[..]).unwrap_err();
        assert_eq!(err, "11 min 0 s long: hold audio may be at most 10 minutes");
    }

    #[test]
    fn the_comfort_tone_is_made_once_per_format() {
        let a = HoldAudio::tone(Format::PCMU);
        let b = HoldAudio::tone(Format::PCMU);
        assert!(Arc::ptr_eq(&a.frames, &b.frames));
        assert_eq!(a.len(), 100, "2 s of 20 ms frames");
        assert_eq!(HoldAudio::tone(Format::L16_48K).frame(0).unwrap().len(), 1920);
    }
}
