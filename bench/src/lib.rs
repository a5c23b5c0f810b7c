//! netslot-bench: measurement tools for the netslot engine (the RTNL counter so far).
//! Timing harnesses and baselines live in binaries; this library only measures.

#![deny(unsafe_code)] // only rtnl/perf.rs (syscalls, mmap) and the generated skeleton allow it

pub mod rtnl;
