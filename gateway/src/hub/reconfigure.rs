//! Live configuration: a new checked [`Config`] applied to the running gateway at once or
//! not at all. Queues, rules, workstreams, bots that connect over `/v1/bot` and agents may
//! change; open conversations are kept (see `routing::reconfigure`). What is not live is
//! refused with a clear message: `[server]` (the listener, the store, limits read when a
//! connection opens) and the built-in and Bot Framework bots (their runners start with the
//! gateway); those need a restart.

use std::sync::Arc;

use super::error::HubError;
use super::*;
use crate::config::Checked;

/// The parts of a configuration's TOML that cannot change while it runs.
fn fixed_parts(source: &str) -> (Option<toml::Value>, Vec<toml::Value>) {
    let Ok(v) = source.parse::<toml::Table>() else { return (None, Vec::new()) };
    let server = v.get("server").cloned();
    let mut bots: Vec<toml::Value> = v
        .get("bots")
        .and_then(toml::Value::as_array)
        .map(|bots| {
            bots.iter()
                .filter(|b| {
                    b.get("builtin").and_then(toml::Value::as_bool) == Some(true) || b.get("endpoint").is_some()
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    bots.sort_by_key(|b| b.get("name").and_then(toml::Value::as_str).unwrap_or_default().to_owned());
    (server, bots)
}

impl Hub {
    /// Applies a checked configuration (from `PUT /v1/admin/config` or SIGHUP): atomically,
    /// keeping every open conversation. Returns what it moved, one line each; refused with
    /// one line per problem, and then nothing has changed.
    pub fn reconfigure(&self, checked: Checked) -> Result<Vec<String>, HubError> {
        let new = checked.config;
        let old = self.cfg();
        let (old_server, old_bots) = fixed_parts(&old.source);
        let (new_server, new_bots) = fixed_parts(&new.source);
        let mut problems = Vec::new();
        if old_server != new_server {
            problems.push("[server] cannot change while the gateway runs: restart it to apply that part".to_owned());
        }
        if old_bots != new_bots {
            problems.push(
                "built-in bots and bots with an endpoint cannot be added, removed or changed while the gateway runs: restart it to apply that part"
                    .to_owned(),
            );
        }
        if old.cluster != new.cluster {
            problems.push(
                "[cluster] cannot change while the gateway runs: restart every node to apply that part".to_owned(),
            );
        }
        if !problems.is_empty() {
            return Err(HubError::Config(problems));
        }
        let mut engine = self.engine.lock();
        let r = engine.reconfigured(&new, self.clock.now_ms()).map_err(HubError::Config)?;
        let removed: Vec<String> = old
            .bots
            .iter()
            .map(|b| &b.name)
            .chain(old.agents.iter().map(|a| &a.id))
            .filter(|m| r.engine.member_kind(m).is_none())
            .cloned()
            .collect();
        *engine = r.engine;
        *self.parties.write() = Arc::new(parties(&new));
        *self.cfg.write() = Arc::new(new);
        for line in &r.moved {
            tracing::info!("config: {line}");
        }
        self.apply(&mut engine, r.effects);
        drop(engine);
        for m in &removed {
            if let Some((_, conn)) = self.members.remove(m.as_str()) {
                conn.outbox.close(outbox::Reason::Policy, "removed from the configuration");
            }
            tracing::info!(member = %m, "config: removed");
        }
        crate::metrics::CONFIG_RELOADS.inc();
        tracing::info!(moved = r.moved.len(), removed = removed.len(), "config: new configuration applied");
        Ok(r.moved)
    }
}
