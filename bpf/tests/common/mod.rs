//! Test harness: private namespaces per thread, `ip` wrappers, kernel-reported XDP state.
//! Every namespace made here belongs to a thread and dies with it; nothing is named.
#![allow(dead_code, unsafe_code)]

use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

/// True if the tests can run (root); see `netslot_test_support::require_root`.
pub fn privileged(test: &str) -> bool {
    netslot_test_support::require_root(test)
}

/// A short unique tag for names (pid + nanoseconds), so parallel runs never collide.
pub fn unique_tag() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id() & 0xffff, nanos & 0xfffff)
}

pub use netslot_test_support::unshare;

/// Makes every mount in the calling thread's (new) mount namespace private,
/// so mounts made here never propagate to the host.
pub fn make_mounts_private() {
    // SAFETY: all pointers are NUL-terminated literals or null, as mount(2)
    // allows for a propagation change (MS_REC | MS_PRIVATE).
    let rc = unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    assert_eq!(
        rc,
        0,
        "mount --make-rprivate /: {}",
        std::io::Error::last_os_error()
    );
}

pub use netslot_test_support::in_private;

type Job = Box<dyn FnOnce() + Send>;

/// A thread living in its own network namespace, running jobs sent to it.
/// Dropping it ends the thread and so the namespace (and veth ends inside it).
pub struct NetnsWorker {
    jobs: Option<mpsc::Sender<Job>>,
    handle: Option<thread::JoinHandle<()>>,
    /// Thread id, usable as `netns <tid>` by `ip` (IFLA_NET_NS_PID resolves tids).
    pub tid: u32,
}

impl NetnsWorker {
    pub fn spawn() -> Self {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (tid_tx, tid_rx) = mpsc::channel();
        let handle = thread::spawn(move || {
            unshare(libc::CLONE_NEWNET);
            tid_tx.send(thread_id()).expect("send tid");
            for job in rx {
                job();
            }
        });
        let tid = tid_rx.recv().expect("worker started");
        Self {
            jobs: Some(jobs),
            handle: Some(handle),
            tid,
        }
    }

    /// Runs `f` inside the worker's namespace and returns its result.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(r);
        });
        self.jobs
            .as_ref()
            .expect("worker alive")
            .send(job)
            .expect("worker alive");
        match rx.recv().expect("worker answered") {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for NetnsWorker {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The calling thread's kernel tid, from the `/proc/thread-self` link (`PID/task/TID`).
pub fn thread_id() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").expect("read /proc/thread-self");
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .expect("tid in /proc/thread-self")
}

/// Runs a command in the calling thread's namespaces; panics with its stderr on failure.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ip(args: &[&str]) -> String {
    run("ip", args)
}

/// `ip -j -d link show dev <dev>` as JSON (the kernel's RTM_NEWLINK dump).
pub fn link_json(dev: &str) -> serde_json::Value {
    let out = ip(&["-j", "-d", "link", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output is JSON");
    v.get(0).cloned().expect("one link")
}

pub fn ifindex(dev: &str) -> u32 {
    let idx = link_json(dev)["ifindex"].as_u64().expect("ifindex");
    u32::try_from(idx).expect("ifindex fits u32")
}

/// XDP program id the kernel reports for `dev` (IFLA_XDP_PROG_ID), if any.
pub fn xdp_prog_id(dev: &str) -> Option<u32> {
    let link = link_json(dev);
    let xdp = link.get("xdp")?;
    let id = xdp
        .pointer("/prog/id")
        .or_else(|| xdp.pointer("/attached/0/prog/id"))?
        .as_u64()?;
    u32::try_from(id).ok()
}

/// Waits (up to 5 s) until the kernel reports `dev` with operstate UP (carrier on).
pub fn wait_oper_up(dev: &str) {
    for _ in 0..500 {
        if link_json(dev)["operstate"].as_str() == Some("UP") {
            return;
        }
        thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{dev} never reached operstate UP: {}", link_json(dev));
}
