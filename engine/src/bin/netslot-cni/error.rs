//! error: CNI error results (SPEC.md "Error"): a well-known code, a message and details,
//! printed on stdout with a non-zero exit.

use serde::Serialize;

/// Well-known error codes of CNI spec 1.1.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// 1: incompatible CNI version.
    IncompatibleVersion = 1,
    /// 3: container unknown or does not exist.
    ContainerUnknown = 3,
    /// 4: invalid necessary environment variables.
    InvalidEnv = 4,
    /// 5: I/O failure.
    Io = 5,
    /// 6: failed to decode content.
    Decode = 6,
    /// 7: invalid network config.
    InvalidConfig = 7,
    /// 11: try again later (the daemon is not running or stopping).
    TryAgainLater = 11,
    /// 50: the plugin is not available (STATUS).
    NotAvailable = 50,
    /// 100+: plugin-specific; here, the kernel refused a slot.
    Kernel = 100,
}

/// A CNI error result.
#[derive(Debug, Serialize)]
pub(crate) struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self {
            cni_version: crate::SPEC_VERSION.into(),
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
}
