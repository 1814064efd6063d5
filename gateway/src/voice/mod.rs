//! Voice calls: the media side of a voice conversation.
//!
//! A call leg (an IVR connector on `/v1/voice`, or Twilio Media Streams on
//! `/v1/voice/twilio/{workstream}`) streams the caller's audio in its format; the holder
//! (a voice-enabled bot or an agent) gets it in the format it asked for when it connected
//! (`?audio=`), in binary frames prefixed with the call's 4-byte stream number, and answers
//! the same way. [`Call`] holds a call's media state: the re-framing of caller audio into
//! 20 ms frames, in-band DTMF detection, the route to the holder with its transcoder, and
//! the playout buffer toward the caller, which the connection's pacer drains at 1× speed
//! (a bot that sends a whole prompt at once is played in real time, not dumped). While
//! the call waits in a queue the pacer plays hold audio, so the caller is never left in
//! silence; when the holder changes, queued audio of the old holder is dropped.
//!
//! All of this is synchronous code under the call's own mutex; the connection tasks in
//! `server::voice` do the IO.

mod call;
mod hold;

pub use call::{Call, Play, Route, Tick};
pub use hold::{HoldAudio, HoldPrompt, MAX_HOLD_SECS, Wav, decode_wav};

/// A binary media frame: the 4-byte big-endian stream number, then audio.
pub fn media_frame(stream: u32, audio: &[u8]) -> bytes::Bytes {
    let mut b = bytes::BytesMut::with_capacity(4 + audio.len());
    b.extend_from_slice(&stream.to_be_bytes());
    b.extend_from_slice(audio);
    b.freeze()
}

/// Splits a holder's binary frame into stream number and audio.
pub fn parse_media_frame(frame: &[u8]) -> Option<(u32, &[u8])> {
    let (head, audio) = frame.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), audio))
}
