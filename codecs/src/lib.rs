//! Telephony audio conversion for Switchboard.
//!
//! Voice arrives from IVR connectors as G.711 µ-law or A-law at 8 kHz; bots and agents want
//! 16-bit linear PCM at 16, 24 or 48 kHz (SPEC §5). This crate does that conversion and finds
//! DTMF digits in the audio.
//!
//! **Invariant:** this crate does no IO and does not depend on tokio; everything is a pure
//! function or a small stateful processor over slices.
//!
//! Map, in the order audio flows through it:
//! - [`format`](mod@format): the six wire formats of SPEC §5.3 (`pcmu/8000` … `l16/48000`).
//! - [`g711`]: µ-law and A-law, after ITU-T G.191.
//! - [`l16`]: linear PCM bytes, checked.
//! - [`resample`]: polyphase FIR resampling between 8, 16, 24 and 48 kHz (SSE2 or NEON, and
//!   an AVX2 kernel picked at run time where the CPU has it: the crate's one `unsafe`).
//! - [`clip`]: whole-clip conversion between any two rates (44.1 kHz WAV prompts), done once.
//! - [`transcode`]: [`Transcoder`], the per-call-leg pipeline
//!   (source format → linear → resample → target format), and [`Framer`], 20 ms re-chunking.
//! - [`dtmf`]: in-band detection (Goertzel) and generation, and RFC 4733 telephone events.
//!
//! Testing: the DTMF tests run `sox` and `espeak-ng` and fail if they are missing; install
//! them (and python3, which regenerates the G.711 golden vectors with
//! `scripts/gen_g711_golden.py`) with `scripts/codecs-test-deps.sh`. Fuzz targets are in
//! `codecs/fuzz`, a separate cargo-fuzz crate.

pub mod clip;
pub mod dtmf;
pub mod error;
pub mod format;
pub mod g711;
pub mod l16;
pub mod resample;
pub mod transcode;

pub use error::CodecError;
pub use format::{Encoding, FRAME_MS, Format};
pub use resample::Resampler;
pub use transcode::{Framer, Transcoder};
