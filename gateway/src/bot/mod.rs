//! The built-in bot user: a Power Virtual Agents-style topic bot, so `switchboard serve`
//! shows the whole bot → human flow with nothing else running.
//!
//! This module is the bot's sans-IO core: its script (`script.rs`, topics from the
//! configuration, checked), trigger matching (`matcher.rs`) and the dialog
//! (`dialog.rs`: a conversation's state in, actions out). It knows nothing of the hub;
//! `hub::builtin_bot` runs it as a bot user connected to the hub.

mod dialog;
pub mod matcher;
pub mod script;

pub use dialog::{Action, Dialog};
pub use script::Script;
