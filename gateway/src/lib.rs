//! Switchboard gateway library.
