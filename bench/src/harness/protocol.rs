//! protocol: the line protocol between the harness and a child running one system.
//! Parent says a step, the child answers with one line: `WORD` or `WORD <json>`.

use serde::{Deserialize, Serialize};

use crate::systems::{HostView, Provision};

/// Parent -> child: open sockets, start pools (untimed).
pub const SETUP: &str = "setup";
/// Child -> parent: setup finished.
pub const READY: &str = "ready";
/// Parent -> child: provision now (timed).
pub const GO: &str = "go";
/// Child -> parent: provisioning finished; followed by [`Done`] as JSON.
pub const DONE: &str = "done";
/// Parent -> child: read the host namespace back.
pub const VERIFY: &str = "verify";
/// Child -> parent: followed by [`HostView`] as JSON.
pub const VERIFIED: &str = "verified";
/// Parent -> child: remove everything and exit.
pub const TEARDOWN: &str = "teardown";
/// Child -> parent: followed by [`Gone`] as JSON; the child exits next.
pub const GONE: &str = "gone";
/// Child -> parent: a step failed; followed by the message as JSON.
pub const FAILED: &str = "failed";

/// The child's report of the provisioning step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Done {
    /// Wall time of `System::provision`, seconds.
    pub wall_s: f64,
    /// What the system said.
    pub provision: Provision,
    /// Peak RSS of the child process itself (VmHWM), KiB.
    pub rss_self_kib: u64,
    /// Largest peak RSS of any waited-for descendant (RUSAGE_CHILDREN), KiB.
    pub rss_children_kib: u64,
}

/// The child's report of the teardown step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Gone {
    /// Wall time of `System::teardown` (the kernel's asynchronous part comes later).
    pub wall_s: f64,
    /// Error, if teardown failed.
    pub error: Option<String>,
}

/// Host-namespace view after provisioning (re-exported for the protocol).
pub type Verified = HostView;
