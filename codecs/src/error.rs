//! The one error type of this crate.
//!
//! Every variant is the caller's fault (malformed audio, an unsupported format string, a bad
//! RFC 4733 payload); nothing here is worth retrying with the same input.

use thiserror::Error;

/// What went wrong converting or parsing audio.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CodecError {
    /// L16 audio must be a whole number of 2-byte samples.
    #[error("L16 audio must be a whole number of 2-byte samples, got {len} bytes")]
    OddLength {
        /// The byte count that was offered.
        len: usize,
    },
    /// A format string or encoding/rate pair that the gateway does not speak.
    #[error(
        "unsupported audio format {0:?}: expected one of pcmu/8000, pcma/8000, l16/8000, \
         l16/16000, l16/24000, l16/48000"
    )]
    UnsupportedFormat(String),
    /// A sample rate the resampler or DTMF detector does not support.
    #[error("unsupported sample rate {0} Hz: expected 8000, 16000, 24000 or 48000")]
    UnsupportedRate(u32),
    /// A clip's sample rate outside what [`clip::resample`](crate::clip::resample) takes.
    #[error("unsupported sample rate {0} Hz: expected 1000 to 384000 Hz")]
    UnsupportedClipRate(u32),
    /// An RFC 4733 telephone-event payload that is not exactly 4 bytes.
    #[error("RFC 4733 telephone-event payload must be 4 bytes, got {len}")]
    BadTelephoneEvent {
        /// The payload length that was offered.
        len: usize,
    },
}
