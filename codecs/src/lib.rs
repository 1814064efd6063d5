//! Telephony audio conversion for Switchboard.
//!
//! **Invariant:** this crate does no IO and does not depend on tokio; everything is a pure
//! function or a small stateful processor over slices.
