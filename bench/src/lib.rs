//! Benchmarks for Switchboard. The Criterion benches live in `benches/`; this library holds
//! what they share.
