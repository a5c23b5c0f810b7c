//! rtnl: counts RTNL acquisitions with a hardware write-watchpoint on `rtnl_mutex.owner`.
//! Leaves out timing and syscall counting; kprobes/fentry are refused on our kernels.
//!
//! Files: `locate` finds the address (System.map, else `kread` decodes `rtnl_lock` via
//! BPF, with `kallsyms`); `perf` opens the per-CPU watchpoints and rings; `classify`
//! turns writes into acquisitions and holds; `counter` runs the window; `report` answers.
//!
//! What the method cannot see: which lock call site or netlink message took RTNL (only
//! the task); acquisitions still held when `stop` runs; holds of locks taken before
//! `start`; CPUs brought online after `start`; samples dropped by throttling or a full
//! ring (reported by [`RtnlReport::is_complete`]). Waiters spinning or queueing make
//! extra lock-side writes; those never count. Hold times include the debug-trap
//! latency (a few us). Tasks are split by process: a short-lived child is attributed by
//! the pid the caller passes, or via fork records ([`RtnlReport::own`]).

mod classify;
mod counter;
mod error;
mod kallsyms;
mod kread;
mod locate;
mod perf;
mod report;

pub use classify::Acquisition;
pub use counter::RtnlCounter;
pub use error::CounterError;
pub use locate::{AddressSource, RtnlAddress};
pub use perf::monotonic_ns;
pub use report::{PidCount, RtnlReport};
