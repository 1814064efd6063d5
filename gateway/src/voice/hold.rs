//! Hold audio: what a caller hears while waiting in a queue.
//!
//! Either a prompt from a WAV file (mono, 16-bit PCM, any of the supported rates) named by
//! the workstream's `hold_audio`, or by default a soft comfort tone (a 440 Hz beep of
//! 200 ms every 2 s over quiet silence), looped, converted once to the caller's format.

use bytes::Bytes;
use switchboard_codecs::{Encoding, Format, Framer, Transcoder};

/// Looping hold audio in one call's format, 20 ms at a time.
#[derive(Debug, Clone)]
pub struct HoldAudio {
    frames: std::sync::Arc<Vec<Bytes>>,
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

impl HoldAudio {
    /// The default comfort tone in `format`.
    pub fn tone(format: Format) -> HoldAudio {
        let rate = format.sample_rate();
        Self::from_linear(&comfort_tone(rate), rate, format)
    }

    /// `samples` (linear, at `rate`) converted to `format` and cut into 20 ms frames.
    pub fn from_linear(samples: &[i16], rate: u32, format: Format) -> HoldAudio {
        let mut pcm = Vec::with_capacity(samples.len() * 2);
        for s in samples {
            pcm.extend_from_slice(&s.to_le_bytes());
        }
        let from = Format::new(Encoding::L16, rate).unwrap_or(format);
        let mut t = Transcoder::new(from, format);
        let mut out = Vec::new();
        let _ = t.process(&pcm, &mut out);
        let mut framer = Framer::new(format);
        framer.push(&out);
        let frames: Vec<Bytes> = framer.frames().collect();
        HoldAudio { frames: std::sync::Arc::new(frames) }
    }

    /// Reads a WAV prompt (mono 16-bit PCM).
    pub fn from_wav(path: &std::path::Path, format: Format) -> Result<HoldAudio, String> {
        let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let (rate, samples) = parse_wav(&data).map_err(|e| format!("{}: {e}", path.display()))?;
        if Format::new(Encoding::L16, rate).is_err() {
            return Err(format!("{}: sample rate {rate} is not 8, 16, 24 or 48 kHz", path.display()));
        }
        Ok(Self::from_linear(&samples, rate, format))
    }

    /// The `i`-th frame of the loop.
    pub fn frame(&self, i: usize) -> Option<Bytes> {
        (!self.frames.is_empty()).then(|| self.frames[i % self.frames.len()].clone())
    }
}

/// A minimal RIFF/WAVE reader for mono 16-bit PCM.
pub fn parse_wav(data: &[u8]) -> Result<(u32, Vec<i16>), String> {
    if data.len() < 12 || &data[0..4] != b"RIFF" || &data[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let mut pos = 12;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    while pos + 8 <= data.len() {
        let id = &data[pos..pos + 4];
        let len = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]) as usize;
        let body = data.get(pos + 8..(pos + 8).saturating_add(len).min(data.len())).unwrap_or(&[]);
        if id == b"fmt " && body.len() >= 16 {
            let u16at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
            let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
            fmt = Some((u16at(0), u16at(2), rate, u16at(14)));
        } else if id == b"data" {
            let (format, channels, rate, bits) = fmt.ok_or("data before fmt")?;
            if format != 1 || channels != 1 || bits != 16 {
                return Err(format!("need mono 16-bit PCM, got format {format}, {channels} channel(s), {bits} bits"));
            }
            let samples = body.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
            return Ok((rate, samples));
        }
        pos += 8 + len + (len & 1);
    }
    Err("no data chunk".into())
}
