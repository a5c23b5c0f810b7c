//! daemon: the wire format of `netslot serve` (`protocol`), a blocking client of it
//! (`client`), and the judgement of the namespaces its peers hand it (`target`).

pub mod client;
pub mod protocol;
pub mod target;
