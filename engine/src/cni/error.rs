//! cni::error: the CNI error result (spec 1.1.0 codes and the plugin's own), and the
//! spec version the plugin implements; what every other part of `cni` reports with.

use serde::Serialize;

/// The CNI spec version the plugin implements.
pub const SPEC_VERSION: &str = "1.1.0";

/// Well-known error codes of CNI spec 1.1.0 (1-99 are the spec's), and the plugin's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: incompatible CNI version.
    IncompatibleVersion = 1,
    /// 3: container unknown or does not exist (also: CNI_NETNS is not a network
    /// namespace the caller can open).
    ContainerUnknown = 3,
    /// 4: invalid necessary environment variables.
    InvalidEnv = 4,
    /// 5: I/O failure.
    Io = 5,
    /// 6: failed to decode content (the configuration, or the daemon's answer).
    Decode = 6,
    /// 7: invalid network config.
    InvalidConfig = 7,
    /// 11: try again later (the daemon is not running or stopping).
    TryAgainLater = 11,
    /// 50: the plugin is not available (STATUS).
    NotAvailable = 50,
    /// 100+: plugin-specific; here, the kernel refused a slot, or CHECK found the
    /// kernel differing from `prevResult`.
    Kernel = 100,
}

/// A CNI error result, printed as JSON on stdout with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CniError {
    /// The configuration's `cniVersion` (the plugin's own before it is known).
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// One of [`Code`].
    pub code: u32,
    /// For people: what failed.
    pub msg: String,
    /// More about it, when there is more.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error of `code`, at the plugin's own spec version.
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self {
            cni_version: SPEC_VERSION.into(),
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// The same error with `details`.
    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The JSON the plugin prints.
    pub fn to_json(&self) -> String {
        // Strings and a number: serializing cannot fail, but a panic is never the answer.
        serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                r#"{{"cniVersion":"{SPEC_VERSION}","code":{},"msg":"unprintable error"}}"#,
                self.code
            )
        })
    }
}
