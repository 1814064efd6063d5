//! G.711 companding (µ-law and A-law), following ITU-T G.191's reference implementation
//! (the Software Tool Library's `g711.c`).
//!
//! Both laws are table-driven, with tables built at compile time by `const fn`s that transcribe
//! the G.191 algorithm: decoding is one lookup in a 256-entry `i16` table; encoding is one
//! lookup in a table indexed by the sample's significant high bits (µ-law depends only on
//! `x >> 2`, A-law only on `x >> 4`, so the tables are 16 KiB and 4 KiB and stay in L1).
//!
//! **Where references disagree.** For A-law and for both decoders, G.191 and Sun's `g711.c`
//! (which CPython's `audioop` uses) agree on every input. For µ-law *encoding* they differ on
//! 508 negative inputs: G.191 takes the magnitude of a negative sample as the one's complement
//! `(!x) >> 2`, Sun as `-(x >> 2)`, one 14-bit step larger. We follow G.191, so that
//! `ulaw::encode(x) == audioop.lin2ulaw(x)` for every `x >= 0`, and for `x < 0`
//! `audioop.lin2ulaw(x) == ulaw::encode(max(x - 4, -32768))`; the golden tests check both.

pub mod alaw;
pub mod ulaw;
