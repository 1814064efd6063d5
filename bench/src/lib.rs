//! Benchmarks for Switchboard. The Criterion micro-benchmarks live in `benches/`; the load
//! generator (`switchboard-load`) and the baseline it is compared with (`switchboard-echo`)
//! are thin binaries in `src/bin/` over [`load`].

pub mod load;
