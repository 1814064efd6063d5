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

/// The mark of a frame in `format`: the level of its last 2 ms, where the resamplers' step
/// response from the previous frame's level has settled.
pub(super) fn mark(format: Format, audio: &[u8]) -> Option<u8> {
    let tail_samples = format.sample_rate() as usize / 500;
    let bytes = format.encoding().bytes_per_sample();
    let tail = &audio[audio.len().saturating_sub(tail_samples * bytes) / bytes * bytes..];
    match format.encoding() {
        Encoding::Pcmu => nearest_level(tail.iter().map(|&c| ulaw::decode(c))),
        Encoding::Pcma => nearest_level(tail.iter().map(|&c| alaw::decode(c))),
        Encoding::L16 => nearest_level(tail.chunks_exact(2).map(|s| i16::from_le_bytes([s[0], s[1]]))),
    }
}

/// The caller's 8 frames: 20 ms of µ-law at each level.
pub(super) fn caller_frames() -> Vec<Bytes> {
    LEVELS.iter().map(|&l| Bytes::from(vec![ulaw::encode(l); CALLER_FRAME_BYTES])).collect()
}

/// The echo baseline's bot frame: `[stream][20 ms of the bot's `format` at the level of k]`.
pub(super) fn bot_frame(format: Format, stream: u32, k: usize) -> Bytes {
    let samples = vec![LEVELS[usize::from(mark_of(k))]; format.samples_per_frame()];
    let mut v = Vec::with_capacity(4 + format.bytes_per_frame());
    v.extend_from_slice(&stream.to_be_bytes());
    match format.encoding() {
        Encoding::Pcmu => ulaw::encode_into(&samples, &mut v),
        Encoding::Pcma => alaw::encode_into(&samples, &mut v),
        Encoding::L16 => l16::encode_le(&samples, &mut v),
    }
    Bytes::from(v)
}

/// How the report names a bot's format: "L16 16 kHz", "µ-law 8 kHz".
pub fn format_title(format: Format) -> String {
    let name = match format.encoding() {
        Encoding::Pcmu => "µ-law",
        Encoding::Pcma => "A-law",
        Encoding::L16 => "L16",
    };
    format!("{name} {} kHz", format.sample_rate() / 1000)
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
    use switchboard_codecs::{Framer, Transcoder};

    use super::*;

    /// The marks survive the gateway's path both ways, for every format a bot can ask for:
    /// µ-law 8 kHz → the bot's format, and back → µ-law 8 kHz re-framed for the caller.
    #[test]
    fn marks_survive_transcoding_both_ways() {
        let frames = caller_frames();
        for bot in Format::ALL {
            let mut up = Transcoder::new(Format::PCMU, bot);
            let mut down = Transcoder::new(bot, Format::PCMU);
            let mut framer = Framer::new(Format::PCMU);
            for k in 0..400 {
                assert_eq!(mark(Format::PCMU, &frames[k % 8]), Some(mark_of(k)));
                let mut to_bot = Vec::new();
                up.process(&frames[k % 8], &mut to_bot).unwrap();
                assert_eq!(to_bot.len(), bot.bytes_per_frame());
                assert_eq!(mark(bot, &to_bot), Some(mark_of(k)), "{bot}: to the bot, frame {k}");
                let mut back = Vec::new();
                down.process(&to_bot, &mut back).unwrap();
                framer.push(&back);
                let out: Vec<Bytes> = framer.frames().collect();
                assert_eq!(out.len(), 1);
                assert_eq!(mark(Format::PCMU, &out[0]), Some(mark_of(k)), "{bot}: back to the caller, frame {k}");
            }
            // A frame out of place is seen.
            let mut to_bot = Vec::new();
            up.process(&frames[3], &mut to_bot).unwrap();
            assert_ne!(mark(bot, &to_bot), Some(mark_of(400)));
        }
    }

    #[test]
    fn baseline_bot_frames_carry_stream_and_mark() {
        for bot in Format::ALL {
            let f = bot_frame(bot, 7, 13);
            assert_eq!(f.len(), 4 + bot.bytes_per_frame());
            assert_eq!(stream_of(&f), Some(7));
            assert_eq!(mark(bot, &f[4..]), Some(mark_of(13)));
        }
        assert_eq!(format_title(Format::PCMU), "µ-law 8 kHz");
        assert_eq!(format_title(Format::L16_16K), "L16 16 kHz");
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
    fn most_pairs_at_a_count_decide_whether_it_holds() {
        let point = super::super::test_point;
        // One point a count: it alone decides.
        assert_eq!(largest_holding(&[point(500, 2.0), point(1000, 6.0)]), Some(500));
        // Three at 1,000: two of them hold.
        let three = [point(500, 2.0), point(1000, 6.0), point(1000, 4.0), point(1000, 4.5)];
        assert_eq!(largest_holding(&three), Some(1000));
        // One of three is not most.
        let one = [point(500, 2.0), point(1000, 4.0), point(1000, 6.0), point(1000, 7.0)];
        assert_eq!(largest_holding(&one), Some(500));
        // Half is not most either.
        assert_eq!(largest_holding(&[point(1000, 4.0), point(1000, 6.0)]), None);
    }

    #[test]
    fn sweeps_double_up_to_the_bound() {
        assert_eq!(next_count(1000, 4000), Some(2000));
        assert_eq!(next_count(3000, 4000), Some(4000));
        assert_eq!(next_count(4000, 4000), None);
        assert_eq!(next_count(1000, 0), None);
    }
}
