//! harness: runs each system in its own child process and private namespaces, and
//! measures it from outside: wall time, syscalls (BPF), RTNL (watchpoint), peak RSS.
//! Leaves provisioning to `systems` and presentation to `output`.
//!
//! The parent re-executes this binary as `netslot-bench child ...` under
//! `unshare --net --mount --propagation private`, so every device, namespace and mount a
//! system makes dies with the child. They talk in lines (see `protocol`): the parent
//! starts its counters between steps, so each window holds exactly one step.
//!
//! With `--neighbour`, a second re-executed process (`neighbour`) toggles a link in a
//! namespace of its own while the system provisions, and reports its request latencies.

pub mod child;
pub mod neighbour;
pub mod parent;
pub mod protocol;
pub mod stats;
pub mod summary;

pub use neighbour::{Neighbour, NeighbourReport};
pub use parent::{run_one, Counters, RtnlFigures, RunOptions, RunRecord};
pub use summary::{summarize, Summary, SystemSummary};
