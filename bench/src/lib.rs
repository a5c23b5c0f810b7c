//! netslot-bench: measures netslot and its baselines: the RTNL counter, the syscall
//! counter, the systems under test, the run harness and the report writers.
//! The command line lives in src/bin/netslot-bench; this library only measures.
//!
//! ```text
//!  harness::parent ── spawns ──> harness::child (private netns + mount ns) ── systems::*
//!        │  counts from outside: rtnl (watchpoint), syscount (BPF tracepoints)
//!        └──> harness::summary ──> output (JSON, Markdown, SVG)
//! ```

#![deny(unsafe_code)] // only rtnl/perf.rs, harness/child.rs, the systems' syscall shims
                      // and the generated skeletons allow it

pub mod harness;
pub mod output;
pub mod plot;
pub mod rtnl;
pub mod syscount;
pub mod systems;
