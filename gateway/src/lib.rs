//! Switchboard: a conversation gateway for chat and voice. Customers are routed by their
//! workstream's rules to a queue, served first by a bot user and handed to a human agent
//! when the bot escalates.
//!
//! Start at `ARCHITECTURE.md` in the repository root for the map.

pub mod auth;
pub mod bot;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod context;
pub mod hub;
pub mod load;
pub mod metrics;
pub mod protocol;
pub mod routing;
pub mod server;
pub mod store;
pub mod voice;
