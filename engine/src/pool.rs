//! pool: a dedicated thread that creates network namespaces ahead of demand.
//! Owns namespace creation only; what goes into a namespace is `plan`'s business.
//!
//! A namespace can only be made by unshare/clone (copy_net_ns); no netlink message or
//! io_uring opcode makes one. So one thread does, per namespace: unshare(CLONE_NEWNET),
//! socket(NETLINK_ROUTE) inside it, setsockopt(NETLINK_EXT_ACK): three system calls. The
//! socket keeps the namespace alive; an nsfs fd is opened only when someone asks for it.
//! The thread never returns to its first namespace: each unshare moves it on. Creation is
//! mostly outside RTNL (setup_net takes it once for loopback), so it overlaps the engine's
//! RTNL-bound link work on another core.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::microvm::TapConfig;
use crate::netns;
use crate::netns::PooledNs;
use crate::sock;

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<io::Result<PooledNs>>,
    /// Namespaces asked for and not yet taken.
    demand: usize,
    low: usize,
    high: usize,
    /// Between falling under `low` and reaching `high`.
    refilling: bool,
    /// Set after a creation error until a consumer has seen it.
    paused: bool,
    /// Namespaces being created right now (by any pool thread).
    in_progress: usize,
    /// How many ready namespaces the waiting consumer needs before it is woken (0: no
    /// consumer waits). Waking only then keeps futex calls per chunk, not per namespace:
    /// std's Condvar::notify_one always enters the kernel.
    consumer_needs: usize,
    shutdown: bool,
    /// Time spent creating, and how many were created.
    busy: Duration,
    created: u64,
}

impl State {
    fn wants_more(&self) -> bool {
        if self.shutdown || self.paused {
            return false;
        }
        let coming = self.ready.len() + self.in_progress;
        coming < self.demand || (self.refilling && coming < self.high)
    }

    fn update_refill(&mut self) {
        if self.ready.len() < self.low {
            self.refilling = true;
        } else if self.ready.len() >= self.high {
            self.refilling = false;
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when a namespace is ready (consumers wait on it).
    ready: Condvar,
    /// Signalled when demand grows or the pool shrinks (the producer waits on it).
    wanted: Condvar,
}

/// Handle to the pool thread.
#[derive(Debug)]
pub(crate) struct NsPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// Pool figures.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PoolStats {
    pub busy: Duration,
    pub created: u64,
}

impl NsPool {
    /// Starts `threads` creating threads. They keep between `low` and `high` namespaces
    /// ready when idle, and make what is demanded beyond that; with `tap`, each with a
    /// microVM tap inside.
    pub fn start(
        threads: usize,
        low: usize,
        high: usize,
        tap: Option<TapConfig>,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        {
            let mut s = shared.state.lock().expect("pool lock");
            s.low = low;
            s.high = high;
            s.update_refill();
        }
        let mut pool = Self {
            shared,
            threads: Vec::new(),
        };
        for i in 0..threads.max(1) {
            let worker = Arc::clone(&pool.shared);
            let tap = tap.clone();
            let thread = std::thread::Builder::new()
                .name(format!("netslot-pool-{i}"))
                .spawn(move || produce(&worker, tap.as_ref()))?;
            pool.threads.push(thread);
        }
        Ok(pool)
    }

    /// Announces that `count` more namespaces will be taken soon.
    pub fn demand(&self, count: usize) {
        let mut s = self.shared.state.lock().expect("pool lock");
        s.demand += count;
        self.shared.wanted.notify_all();
    }

    /// Takes between `min` and `max` ready namespaces (fewer only when an error is
    /// queued), waiting until `min` are ready. Each entry is a namespace or the error that
    /// creating one met.
    pub fn take(&self, min: usize, max: usize) -> Vec<io::Result<PooledNs>> {
        let min = min.clamp(1, max.max(1));
        let mut s = self.shared.state.lock().expect("pool lock");
        // Wait until `min` are ready, or an error is queued, or nothing more is coming.
        while !s.shutdown && (s.ready.is_empty() || s.ready.len() < min && !s.paused) {
            if !s.wants_more() && s.in_progress == 0 {
                // Nothing announced covers this take: ask for it.
                s.demand = s.demand.max(min);
                s.paused = false;
                self.shared.wanted.notify_all();
            }
            s.consumer_needs = min;
            s = self.shared.ready.wait(s).expect("pool lock");
        }
        s.consumer_needs = 0;
        let n = max.min(s.ready.len());
        let taken: Vec<_> = s.ready.drain(..n).collect();
        s.demand = s.demand.saturating_sub(taken.len());
        let was_paused = std::mem::take(&mut s.paused);
        s.update_refill();
        if was_paused || s.wants_more() && s.in_progress == 0 {
            // A producer may be asleep with work to do again.
            self.shared.wanted.notify_all();
        }
        taken
    }

    pub fn stats(&self) -> PoolStats {
        let s = self.shared.state.lock().expect("pool lock");
        PoolStats {
            busy: s.busy,
            created: s.created,
        }
    }
}

impl Drop for NsPool {
    fn drop(&mut self) {
        {
            let mut s = self.shared.state.lock().expect("pool lock");
            s.shutdown = true;
            s.ready.clear(); // closes the sockets: the kernel destroys those namespaces
        }
        self.shared.wanted.notify_all();
        self.shared.ready.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn produce(shared: &Shared, tap: Option<&TapConfig>) {
    // Each unshare leaves this thread inside the namespace it just made, which is handed
    // out as a slot: a thread sitting in it keeps it alive after the slot is torn down
    // (found by the soak test: one namespace outlived every teardown). So the thread goes
    // home whenever it runs out of work: one setns per busy period, not per namespace.
    let home = netns::open_current().ok();
    let mut away = false;
    let mut s = shared.state.lock().expect("pool lock");
    loop {
        while !s.wants_more() {
            if s.shutdown {
                return;
            }
            if away {
                if let Some(home) = &home {
                    drop(s);
                    if let Err(e) = netns::enter(std::os::fd::AsFd::as_fd(home)) {
                        tracing::warn!("pool thread cannot return to its namespace: {e}");
                    }
                    away = false;
                    s = shared.state.lock().expect("pool lock");
                    continue;
                }
            }
            s = shared.wanted.wait(s).expect("pool lock");
        }
        s.in_progress += 1;
        drop(s);
        let started = Instant::now();
        away = true;
        let made = create_one(tap);
        let took = started.elapsed();
        s = shared.state.lock().expect("pool lock");
        s.in_progress -= 1;
        if s.shutdown {
            return;
        }
        s.busy += took;
        if made.is_ok() {
            s.created += 1;
        } else {
            s.paused = true;
        }
        s.ready.push_back(made);
        s.update_refill();
        let needed = s.consumer_needs;
        if needed > 0
            && (s.ready.len() >= needed || s.paused || !s.wants_more() && s.in_progress == 0)
        {
            shared.ready.notify_one();
        }
    }
}

/// unshare + socket + setsockopt: one namespace, held by the socket made inside it.
/// With `tap`, the microVM slot's tap too (`tap::create`), while the thread is inside.
fn create_one(tap: Option<&TapConfig>) -> io::Result<PooledNs> {
    netns::unshare_new()?;
    let sock = sock::slot_socket()?;
    let tap_ifindex = match tap {
        Some(cfg) => Some(crate::tap::create(cfg, std::os::fd::AsFd::as_fd(&sock))?),
        None => None,
    };
    Ok(PooledNs {
        sock,
        nsfd: Default::default(),
        tap_ifindex,
    })
}
