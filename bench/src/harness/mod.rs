//! harness: runs each system in its own child process and private namespaces, and
//! measures it from outside: wall time, syscalls (BPF), RTNL (watchpoint), peak RSS.
//! Leaves provisioning to `systems` and presentation to `output`.
//!
//! The parent re-executes this binary as `netslot-bench child ...` under
//! `unshare --net --mount --propagation private`, so every device, namespace and mount a
//! system makes dies with the child. They talk in lines (see `protocol`): the parent
//! starts its counters between steps, so each window holds exactly one step.

pub mod child;
pub mod parent;
pub mod protocol;
pub mod stats;
pub mod summary;

pub use parent::{run_one, Counters, RtnlFigures, RunOptions, RunRecord};
pub use summary::{summarize, Summary, SystemSummary};
