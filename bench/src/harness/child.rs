//! child: the child side of a run: checks its namespaces are private, drives one system
//! step by step as the parent asks, and reports each step on the protocol fd.
//! Leaves measuring to the parent, except wall times and peak RSS.
#![allow(unsafe_code)] // dup/dup2, mount and getrusage: each block has its SAFETY note

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::time::Instant;

use serde::Serialize;

use super::protocol::{self, Done, Gone};
use crate::systems::{verify_host, RunSpec, SystemError, SystemKind};

/// Where named namespaces live; the child mounts a private tmpfs there first.
const NETNS_DIR: &str = "/run/netns";

/// Runs `kind` for `spec`; returns the process exit code.
pub fn child_main(kind: SystemKind, spec: &RunSpec) -> i32 {
    let mut proto = match take_stdout() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("child: {e}");
            return 2;
        }
    };
    if let Err(e) = private_namespaces() {
        let _ = say(&mut proto, protocol::FAILED, &e.to_string());
        return 2;
    }
    let mut input = BufReader::new(std::io::stdin());
    let mut system = kind.make();
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => return 1, // the parent went away
            Ok(_) => {}
        }
        let step = line.trim();
        let result = match step {
            protocol::SETUP => system
                .setup(spec)
                .and_then(|()| say_bare(&mut proto, protocol::READY)),
            protocol::GO => {
                let t = Instant::now();
                system.provision(spec).and_then(|provision| {
                    let wall_s = t.elapsed().as_secs_f64();
                    let done = Done {
                        wall_s,
                        provision,
                        rss_self_kib: vm_hwm_kib(),
                        rss_children_kib: children_maxrss_kib(),
                    };
                    say(&mut proto, protocol::DONE, &done)
                })
            }
            protocol::VERIFY => verify_host(spec).and_then(|mut v| {
                v.taps_up = system.verify_slots(spec)?;
                say(&mut proto, protocol::VERIFIED, &v)
            }),
            protocol::TEARDOWN => {
                let t = Instant::now();
                let r = system.teardown(spec);
                let gone = Gone {
                    wall_s: t.elapsed().as_secs_f64(),
                    error: r.err().map(|e| e.to_string()),
                };
                drop(system);
                let _ = say(&mut proto, protocol::GONE, &gone);
                return 0;
            }
            other => Err(SystemError(format!("unknown step {other:?}"))),
        };
        if let Err(e) = result {
            let _ = say(&mut proto, protocol::FAILED, &e.to_string());
            return 1;
        }
    }
}

fn say_bare(out: &mut File, word: &str) -> Result<(), SystemError> {
    writeln!(out, "{word}").map_err(SystemError::ctx("write to the parent"))
}

fn say(out: &mut File, word: &str, body: &impl Serialize) -> Result<(), SystemError> {
    let json = serde_json::to_string(body).map_err(SystemError::ctx("encode"))?;
    writeln!(out, "{word} {json}").map_err(SystemError::ctx("write to the parent"))
}

/// Moves the protocol off stdout (to a private fd) and points stdout at stderr, so
/// programs the system runs cannot write into the protocol.
fn take_stdout() -> Result<File, SystemError> {
    // SAFETY: dup/dup2 on the process's own standard fds; no memory is touched.
    let fd: RawFd = unsafe { libc::dup(1) };
    if fd < 0 {
        return Err(SystemError(format!(
            "dup stdout: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: as above.
    if unsafe { libc::dup2(2, 1) } < 0 {
        return Err(SystemError(format!(
            "dup2: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `fd` was just returned by dup and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Refuses to run unless the network and mount namespaces differ from the parent's
/// (the harness: `unshare` execs the child, so the parent is the harness), then
/// mounts a private tmpfs on /run/netns (named namespaces die with the child).
fn private_namespaces() -> Result<(), SystemError> {
    for ns in ["net", "mnt"] {
        differs_from_parent(ns)?;
    }
    mount_tmpfs(NETNS_DIR)
}

/// Refuses unless this process's `ns` namespace (`net`, `mnt`) differs from its parent's:
/// a process started by hand would otherwise change the host's own network.
pub(crate) fn differs_from_parent(ns: &str) -> Result<(), SystemError> {
    let mine = fs::read_link(format!("/proc/self/ns/{ns}"))
        .map_err(SystemError::ctx(format!("read /proc/self/ns/{ns}")))?;
    let parent = std::os::unix::process::parent_id();
    let theirs = fs::read_link(format!("/proc/{parent}/ns/{ns}"))
        .map_err(SystemError::ctx(format!("read /proc/{parent}/ns/{ns}")))?;
    if mine == theirs {
        return Err(SystemError(format!(
            "this process shares its parent's {ns} namespace; run it through the harness \
             (which starts it under unshare)"
        )));
    }
    Ok(())
}

fn mount_tmpfs(dir: &str) -> Result<(), SystemError> {
    let target = std::ffi::CString::new(dir).expect("no NUL");
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"none".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(SystemError(format!(
            "mount tmpfs on {dir}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// VmHWM of this process in KiB (0 if unreadable).
fn vm_hwm_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Largest ru_maxrss among waited-for descendants, KiB.
fn children_maxrss_kib() -> u64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the pointer we pass.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, ru.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: getrusage succeeded, so the struct is initialised.
    let ru = unsafe { ru.assume_init() };
    u64::try_from(ru.ru_maxrss).unwrap_or(0)
}
