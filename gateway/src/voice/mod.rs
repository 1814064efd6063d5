//! Voice media that knows nothing of connections: hold audio (`hold.rs`: a WAV prompt
//! decoded once, frames cached per caller format, or a comfort tone) and the media frame
//! format holders speak (a 4-byte big-endian stream number, then audio). A call's live
//! media state, which routes audio to its holder's connection, is `hub::call::Call`.
//!
//! All of this is synchronous code under the call's own mutex; the connection tasks in
//! `server::voice` do the IO.

mod hold;

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
