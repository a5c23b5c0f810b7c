//! ipam: runs the IPAM plugin a configuration names, as the CNI spec has a plugin
//! delegate: found in CNI_PATH, given the same configuration on stdin and the same
//! environment (CNI_COMMAND included), its result or CNI error read from its stdout.
//! What a result may hold is `netslot::cni::ipam`'s.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use netslot::cni;
use netslot::cni::reply::{CniError, Code};

/// The first executable file named `plugin` in a directory of CNI_PATH.
fn find(plugin: &str) -> Result<PathBuf, CniError> {
    let Some(path) = std::env::var("CNI_PATH").ok().filter(|p| !p.is_empty()) else {
        return Err(CniError::new(
            Code::InvalidEnv,
            format!("CNI_PATH is not set: it is where the IPAM plugin {plugin} is looked for"),
        ));
    };
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join(plugin))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            CniError::new(
                Code::InvalidConfig,
                format!("the IPAM plugin {plugin} (ipam.type) is not in CNI_PATH {path}"),
            )
        })
}

/// Runs IPAM plugin `plugin` for `command` (ADD, DEL or CHECK) with `conf`, the bytes
/// this plugin read on stdin: ADD's result, `None` for the others; its own CNI error
/// passed through when it fails.
pub fn exec(plugin: &str, command: &str, conf: &[u8]) -> Result<Option<Value>, CniError> {
    let path = find(plugin)?;
    let io = |step: &str, e: std::io::Error| {
        CniError::new(
            Code::Io,
            format!("IPAM plugin {plugin} {command}: {step}: {e}"),
        )
    };
    let mut child = Command::new(&path)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| io(&format!("run {}", path.display()), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits without reading its stdin is judged by its exit status.
        let _ = stdin.write_all(conf);
    }
    let out = child.wait_with_output().map_err(|e| io("wait for it", e))?;
    if !out.status.success() {
        return Err(cni::ipam::failed(plugin, command, &out.stdout));
    }
    if command != "ADD" {
        return Ok(None);
    }
    serde_json::from_slice(&out.stdout).map(Some).map_err(|e| {
        CniError::new(
            Code::Decode,
            format!("IPAM plugin {plugin} ADD: its result is not JSON: {e}"),
        )
    })
}
