//! The voice scenario's audio: frames whose level marks their index (k mod 8), so a lost
//! or reordered frame is seen where it happens, on both sides of the gateway's transcoding.

use super::*;

pub(super) fn mark_of(k: usize) -> u8 {
    (k % LEVELS.len()) as u8
}

/// The nearest level's index to the mean of `samples`.
pub(super) fn nearest_level(samples: impl Iterator<Item = i16>) -> Option<u8> {
    let (mut sum, mut n) = (0i64, 0i64);
    for s in samples {
        sum += i64::from(s);
        n += 1;
    }
    if n == 0 {
        return None;
    }
    let mean = sum / n;
    (0..LEVELS.len()).min_by_key(|&i| (i64::from(LEVELS[i]) - mean).abs()).map(|i| i as u8)
}

/// The mark of a µ-law frame: the level of its last 2 ms, where the resamplers' step
/// response from the previous frame's level has settled.
pub(super) fn mark_ulaw(audio: &[u8]) -> Option<u8> {
    let tail = &audio[audio.len().saturating_sub(16)..];
    nearest_level(tail.iter().map(|&c| ulaw::decode(c)))
}

/// The mark of an L16 (little-endian) frame, from its last 2 ms.
pub(super) fn mark_l16(audio: &[u8]) -> Option<u8> {
    let tail = &audio[audio.len().saturating_sub(64) & !1..];
    nearest_level(tail.chunks_exact(2).map(|s| i16::from_le_bytes([s[0], s[1]])))
}

/// The caller's 8 frames: 20 ms of µ-law at each level.
pub(super) fn caller_frames() -> Vec<Bytes> {
    LEVELS.iter().map(|&l| Bytes::from(vec![ulaw::encode(l); CALLER_FRAME_BYTES])).collect()
}

/// The audio format the voice bot asks for (`/v1/bot?audio=…`): L16 16 kHz by default, as
/// a speech recogniser wants it; µ-law 8 kHz, the callers' own format, shows the gateway's
/// path with no transcoding or resampling (the DTMF search on the callers' audio stays).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum BotAudio {
    #[default]
    #[serde(rename = "l16/16000")]
    L16At16k,
    #[serde(rename = "pcmu/8000")]
    PcmuAt8k,
}

impl BotAudio {
    /// As the bot asks for it.
    pub fn query(self) -> &'static str {
        match self {
            BotAudio::L16At16k => "l16/16000",
            BotAudio::PcmuAt8k => "pcmu/8000",
        }
    }

    /// How the report names it.
    pub fn title(self) -> &'static str {
        match self {
            BotAudio::L16At16k => "L16 16 kHz",
            BotAudio::PcmuAt8k => "µ-law 8 kHz",
        }
    }

    /// Bytes of 20 ms of audio.
    pub(super) fn frame_bytes(self) -> usize {
        match self {
            BotAudio::L16At16k => BOT_FRAME_BYTES,
            BotAudio::PcmuAt8k => CALLER_FRAME_BYTES,
        }
    }

    /// The sequence mark of a frame of this format.
    pub(super) fn mark(self, audio: &[u8]) -> Option<u8> {
        match self {
            BotAudio::L16At16k => mark_l16(audio),
            BotAudio::PcmuAt8k => mark_ulaw(audio),
        }
    }

    /// The echo baseline's bot frame: `[stream][20 ms at the level of k]`.
    pub(super) fn frame(self, stream: u32, k: usize) -> Bytes {
        let mut v = Vec::with_capacity(4 + self.frame_bytes());
        v.extend_from_slice(&stream.to_be_bytes());
        let level = LEVELS[usize::from(mark_of(k))];
        match self {
            BotAudio::L16At16k => {
                for _ in 0..BOT_FRAME_BYTES / 2 {
                    v.extend_from_slice(&level.to_le_bytes());
                }
            }
            BotAudio::PcmuAt8k => v.resize(4 + CALLER_FRAME_BYTES, ulaw::encode(level)),
        }
        Bytes::from(v)
    }
}

impl std::str::FromStr for BotAudio {
    type Err = String;

    fn from_str(s: &str) -> Result<BotAudio, String> {
        [BotAudio::L16At16k, BotAudio::PcmuAt8k]
            .into_iter()
            .find(|a| a.query() == s)
            .ok_or_else(|| format!("unknown bot audio {s:?}: l16/16000 or pcmu/8000"))
    }
}

pub(super) fn stream_of(frame: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(frame.get(..4)?.try_into().ok()?))
}

pub(super) fn stream_in_value(a: &Activity<'_>, path: &[&str]) -> Option<u32> {
    let mut v: serde_json::Value = serde_json::from_str(a.value?.get()).ok()?;
    for key in path {
        v = v.get_mut(*key)?.take();
    }
    u32::try_from(v.as_u64()?).ok()
}

// ---------------------------------------------------------------------------------------
// The run.

#[cfg(test)]
mod tests {
    use switchboard_codecs::{Format, Framer, Transcoder};

    use super::*;

    /// The marks survive the gateway's path both ways: µ-law 8 kHz → L16 16 kHz to the bot,
    /// and the bot's L16 16 kHz → µ-law 8 kHz re-framed for the caller.
    #[test]
    fn marks_survive_transcoding_both_ways() {
        let frames = caller_frames();
        let mut up = Transcoder::new(Format::PCMU, Format::L16_16K);
        let mut down = Transcoder::new(Format::L16_16K, Format::PCMU);
        let mut framer = Framer::new(Format::PCMU);
        for k in 0..400 {
            assert_eq!(mark_ulaw(&frames[k % 8]), Some(mark_of(k)));
            let mut l16 = Vec::new();
            up.process(&frames[k % 8], &mut l16).unwrap();
            assert_eq!(l16.len(), BOT_FRAME_BYTES);
            assert_eq!(mark_l16(&l16), Some(mark_of(k)), "to the bot, frame {k}");
            let mut back = Vec::new();
            down.process(&l16, &mut back).unwrap();
            framer.push(&back);
            let out: Vec<Bytes> = framer.frames().collect();
            assert_eq!(out.len(), 1);
            assert_eq!(mark_ulaw(&out[0]), Some(mark_of(k)), "back to the caller, frame {k}");
        }
        // A frame out of place is seen.
        let mut l16 = Vec::new();
        up.process(&frames[3], &mut l16).unwrap();
        assert_ne!(mark_l16(&l16), Some(mark_of(400)));
    }

    #[test]
    fn baseline_bot_frames_carry_stream_and_mark() {
        for audio in [BotAudio::L16At16k, BotAudio::PcmuAt8k] {
            let f = audio.frame(7, 13);
            assert_eq!(f.len(), 4 + audio.frame_bytes());
            assert_eq!(stream_of(&f), Some(7));
            assert_eq!(audio.mark(&f[4..]), Some(mark_of(13)));
            assert_eq!(audio.query().parse::<BotAudio>(), Ok(audio));
        }
    }

    #[test]
    fn matching_by_order_counts_losses() {
        let t = Instant::now();
        let sched = Schedule { start: t, window: t, end: t + Duration::from_secs(1) };
        let sent: Vec<Instant> = (0..5).map(|i| t + FRAME * i).collect();
        let got: Vec<Instant> = sent.iter().take(4).map(|s| *s + Duration::from_millis(1)).collect();
        let mut x = Tally::default();
        x.add(&sent, &got, sched);
        let d = x.finish(0);
        assert_eq!((d.sent, d.received, d.lost, d.extra), (5, 4, 1, 0));
        assert!(!d.intact());
        assert_eq!(d.latency.count, 4);
        assert_eq!(d.latency.p99_ms, 1.0);
    }

    #[test]
    fn gaps_are_timed_from_the_window_on() {
        let t = Instant::now();
        let sched = Schedule { start: t, window: t + FRAME * 2, end: t + Duration::from_secs(1) };
        // Frames at 0, 20, 40, 60 and 100 ms: the gaps from 40 ms on are 20 and 40 ms.
        let got: Vec<Instant> = [0, 20, 40, 60, 100].iter().map(|&ms| t + Duration::from_millis(ms)).collect();
        let mut s = Samples::default();
        gaps(&got, sched, &mut s);
        let g = s.summary();
        assert_eq!((g.count, g.p50_ms, g.max_ms), (2, 20.0, 40.0));
    }

    #[test]
    fn sweeps_double_up_to_the_bound() {
        assert_eq!(next_count(1000, 4000), Some(2000));
        assert_eq!(next_count(3000, 4000), Some(4000));
        assert_eq!(next_count(4000, 4000), None);
        assert_eq!(next_count(1000, 0), None);
    }
}
