//! The loading edge: where the configuration meets this machine. It reads the
//! configuration file, the environment variables it names (`secret_env`,
//! `admin_token_env`) and the hold-audio files of its workstreams, and hands them to the
//! configuration's pure validation (`config::Config::from_toml_with`). Nothing in the core
//! (configuration, routing, the built-in bot's dialog, voice media) reads a file or the
//! environment; this module is the one place that does, once, at start (and on reload).

use std::path::Path;

use crate::config::{Checked, Config, ConfigError, Resolve};
use crate::voice::HoldPrompt;

/// Resolves from this machine: its environment and its files.
#[derive(Debug)]
pub struct Machine;

impl Resolve for Machine {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn hold_prompt(&self, path: &Path) -> Result<HoldPrompt, String> {
        hold_prompt(path)
    }
}

/// Reads and decodes a hold-audio WAV file; the error does not name the file (the caller
/// says which workstream's it is).
pub fn hold_prompt(path: &Path) -> Result<HoldPrompt, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err("cannot read: is a directory".into());
    }
    HoldPrompt::from_reader(std::io::BufReader::new(file))
}

/// Reads and checks a configuration file.
pub fn config_file(path: &Path) -> Result<Checked, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError(vec![format!("cannot read {}: {e}", path.display())]))?;
    config_text(&text)
}

/// Checks configuration text, resolving what it names from this machine.
pub fn config_text(text: &str) -> Result<Checked, ConfigError> {
    Config::from_toml_with(text, &Machine)
}
