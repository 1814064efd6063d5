//! The per-call-leg pipeline — source format → linear → resample → target format — and the
//! 20 ms framing helper that sits before or after it.
//!
//! A [`Transcoder`] owns its resampler state and two scratch buffers, so after the first
//! frames it does no allocation; the gateway holds one per direction per call leg. A
//! [`Framer`] turns whatever sizes arrive into exact 20 ms frames, because connectors send
//! whatever their jitter buffers hand them but playback and the wire protocol want fixed frames.

use bytes::{Bytes, BytesMut};

use crate::g711::{alaw, ulaw};
use crate::{CodecError, Encoding, Format, Resampler, l16};

/// Converts one direction of one call leg from one [`Format`] to another, keeping resampler
/// state between calls so consecutive frames join without a click.
#[derive(Debug, Clone)]
pub struct Transcoder {
    from: Format,
    to: Format,
    resampler: Resampler,
    linear: Vec<i16>,
    resampled: Vec<i16>,
}

impl Transcoder {
    /// A transcoder from `from` to `to`. Every pair of [`Format`]s is supported.
    pub fn new(from: Format, to: Format) -> Transcoder {
        let resampler = Resampler::new(from.sample_rate(), to.sample_rate())
            .expect("every Format has a rate the resampler supports");
        Transcoder { from, to, resampler, linear: Vec::new(), resampled: Vec::new() }
    }

    /// The input format.
    pub fn from(&self) -> Format {
        self.from
    }

    /// The output format.
    pub fn to(&self) -> Format {
        self.to
    }

    /// Delay added by resampling, in output samples (0 when the rates match).
    pub fn delay(&self) -> usize {
        self.resampler.delay()
    }

    /// Converts `input` (in the `from` format), appending the result (in the `to` format) to
    /// `out`. Fails only for L16 input with an odd byte count, in which case nothing is
    /// appended and the state is unchanged. Over a stream, 20 ms in gives 20 ms out.
    pub fn process(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        if self.from == self.to {
            if self.from.encoding() == Encoding::L16 && !input.len().is_multiple_of(2) {
                return Err(CodecError::OddLength { len: input.len() });
            }
            out.extend_from_slice(input);
            return Ok(());
        }
        self.linear.clear();
        match self.from.encoding() {
            Encoding::Pcmu => ulaw::decode_into(input, &mut self.linear),
            Encoding::Pcma => alaw::decode_into(input, &mut self.linear),
            Encoding::L16 => l16::decode_le(input, &mut self.linear)?,
        }
        let samples = if self.from.sample_rate() == self.to.sample_rate() {
            &self.linear
        } else {
            self.resampled.clear();
            self.resampler.process(&self.linear, &mut self.resampled);
            &self.resampled
        };
        match self.to.encoding() {
            Encoding::Pcmu => ulaw::encode_into(samples, out),
            Encoding::Pcma => alaw::encode_into(samples, out),
            Encoding::L16 => l16::encode_le(samples, out),
        }
        Ok(())
    }

    /// Forgets resampler history, e.g. when queued playback is cleared on barge-in.
    pub fn reset(&mut self) {
        self.resampler.reset();
    }
}

/// Re-chunks a byte stream of one [`Format`] into 20 ms frames, carrying the remainder
/// (including half an L16 sample) to the next push.
#[derive(Debug, Clone)]
pub struct Framer {
    format: Format,
    buf: BytesMut,
}

impl Framer {
    /// A framer for 20 ms frames of `format`.
    pub fn new(format: Format) -> Framer {
        Framer { format, buf: BytesMut::with_capacity(format.bytes_per_frame() * 2) }
    }

    /// The format being framed.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Bytes in one frame.
    pub fn frame_len(&self) -> usize {
        self.format.bytes_per_frame()
    }

    /// Adds input of any length.
    pub fn push(&mut self, input: &[u8]) {
        self.buf.extend_from_slice(input);
    }

    /// The next complete frame, if one is buffered. Frames share the buffer's allocation.
    pub fn next_frame(&mut self) -> Option<Bytes> {
        let len = self.frame_len();
        (self.buf.len() >= len).then(|| self.buf.split_to(len).freeze())
    }

    /// Frames `input` without copying what need not be: the pending bytes are completed
    /// from its start, every whole frame after that is passed to `f` where it lies in
    /// `input`, and only the remainder is kept. The same frames as [`push`](Self::push) then
    /// [`next_frame`](Self::next_frame) until `None`.
    pub fn for_each_frame(&mut self, input: &[u8], mut f: impl FnMut(&[u8])) {
        let len = self.frame_len();
        let mut rest = input;
        if !self.buf.is_empty() {
            let take = len.saturating_sub(self.buf.len() % len).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            while self.buf.len() >= len {
                f(&self.buf.split_to(len));
            }
        }
        if self.buf.is_empty() {
            let whole = rest.len() / len * len;
            for frame in rest[..whole].chunks_exact(len) {
                f(frame);
            }
            rest = &rest[whole..];
        }
        self.buf.extend_from_slice(rest);
    }

    /// How many frames [`push_owned`](Self::push_owned) of `more` bytes would give.
    pub fn frames_after(&self, more: usize) -> usize {
        (self.buf.len() + more) / self.frame_len()
    }

    /// Frames `input`, which the caller gives up: with nothing pending, its whole frames
    /// are passed to `f` as slices of its own allocation (no copy); otherwise it goes
    /// through the buffer. The remainder is kept either way.
    pub fn push_owned(&mut self, input: Vec<u8>, mut f: impl FnMut(Bytes)) {
        let len = self.frame_len();
        if !self.buf.is_empty() || input.len() < len {
            self.push(&input);
            self.frames().for_each(f);
            return;
        }
        let mut all = Bytes::from(input);
        while all.len() >= len {
            f(all.split_to(len));
        }
        self.buf.extend_from_slice(&all);
    }

    /// Every complete frame buffered now.
    pub fn frames(&mut self) -> impl Iterator<Item = Bytes> + '_ {
        std::iter::from_fn(move || self.next_frame())
    }

    /// Bytes buffered that do not yet make a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// At the end of a stream: the remainder padded with silence to a whole frame, or `None`
    /// if nothing is pending. A trailing half L16 sample is dropped, not padded.
    pub fn flush(&mut self) -> Option<Bytes> {
        if self.buf.len() >= self.frame_len() {
            return self.next_frame();
        }
        let whole =
            self.buf.len() / self.format.encoding().bytes_per_sample() * self.format.encoding().bytes_per_sample();
        if whole == 0 {
            self.buf.clear();
            return None;
        }
        self.buf.truncate(whole);
        self.buf.resize(self.frame_len(), self.format.silence_byte());
        self.next_frame()
    }

    /// Drops everything pending (barge-in).
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `for_each_frame` and `push_owned` give the frames `push` and `next_frame` give, for
    /// pieces of every length, whole frames and ragged ones, one after another.
    #[test]
    fn the_copy_free_paths_frame_as_push_does() {
        let stream: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
        for format in [Format::PCMU, Format::L16_16K] {
            let len = format.bytes_per_frame();
            for sizes in [vec![len], vec![37], vec![len, 1, len - 1, 3 * len + 5], vec![2 * len, len / 2]] {
                let (mut base, mut borrowed, mut owned) =
                    (Framer::new(format), Framer::new(format), Framer::new(format));
                let (mut want, mut got_borrowed, mut got_owned) = (Vec::new(), Vec::new(), Vec::new());
                let mut rest = &stream[..];
                let mut i = 0;
                while !rest.is_empty() {
                    let (piece, tail) = rest.split_at(sizes[i % sizes.len()].min(rest.len()));
                    base.push(piece);
                    want.extend(base.frames().map(|f| f.to_vec()));
                    borrowed.for_each_frame(piece, |f| got_borrowed.push(f.to_vec()));
                    let expected = owned.frames_after(piece.len());
                    let before = got_owned.len();
                    owned.push_owned(piece.to_vec(), |f| got_owned.push(f.to_vec()));
                    assert_eq!(got_owned.len() - before, expected, "frames_after");
                    assert_eq!(borrowed.pending(), base.pending());
                    assert_eq!(owned.pending(), base.pending());
                    rest = tail;
                    i += 1;
                }
                assert_eq!(got_borrowed, want, "{format:?} {sizes:?}");
                assert_eq!(got_owned, want, "{format:?} {sizes:?}");
            }
        }
    }

    #[test]
    fn framer_rechunks_and_carries_the_remainder() {
        let mut f = Framer::new(Format::PCMU);
        f.push(&[1; 100]);
        assert_eq!(f.next_frame(), None);
        f.push(&[2; 250]);
        let frames: Vec<Bytes> = f.frames().collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[0][..100], &[1; 100][..]);
        assert_eq!(&frames[0][100..], &[2; 60][..]);
        assert_eq!(&frames[1][..], &[2; 160][..]);
        assert_eq!(f.pending(), 30);
        let last = f.flush().unwrap();
        assert_eq!(&last[..30], &[2; 30][..]);
        assert!(last[30..].iter().all(|&b| b == 0xFF));
        assert_eq!(f.flush(), None);
    }

    #[test]
    fn framer_flush_drops_half_an_l16_sample_and_pads_with_zero() {
        let mut f = Framer::new(Format::L16_8K);
        f.push(&[7; 5]);
        let last = f.flush().unwrap();
        assert_eq!(last.len(), 320);
        assert_eq!(&last[..4], &[7; 4]);
        assert!(last[4..].iter().all(|&b| b == 0));
        let mut f = Framer::new(Format::PCMA);
        f.push(&[1]);
        assert_eq!(f.flush().unwrap()[1], 0xD5);
        let mut f = Framer::new(Format::L16_16K);
        f.push(&[1]);
        assert_eq!(f.flush(), None);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn transcoder_rejects_odd_l16_and_keeps_going() {
        let mut t = Transcoder::new(Format::L16_16K, Format::PCMU);
        let mut out = Vec::new();
        assert_eq!(t.process(&[0; 641], &mut out), Err(CodecError::OddLength { len: 641 }));
        assert!(out.is_empty());
        t.process(&[0; 640], &mut out).unwrap();
        assert_eq!(out.len(), 160);
        let mut same = Transcoder::new(Format::L16_8K, Format::L16_8K);
        assert!(same.process(&[0; 3], &mut out).is_err());
    }
}
