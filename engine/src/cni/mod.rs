//! cni: what the `netslot-cni` plugin needs from the library, without I/O: which keys of
//! a network configuration it honours (`conf`), what it makes of the daemon's answers
//! (`reply`), its results in each CNI version (`result`), and an IPAM plugin's result
//! read into a lease (`ipam`), and the CNI error they all report with (`error`).

pub mod conf;
pub mod error;
pub mod ipam;
pub mod reply;
pub mod result;
