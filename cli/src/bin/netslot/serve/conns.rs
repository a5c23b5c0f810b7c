//! conns: the daemon's table of live connections, which enforces `--max-connections`.
//! A new connection over the cap takes the place of the connection that has been idle
//! (waiting for its next request line) the longest, which is shut down; only when every
//! connection is busy with a request is the new one refused with `busy`. So connections
//! that merely sit open can never lock out a client that has something to ask.

use std::collections::HashMap;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// The live connections.
pub(crate) struct Conns {
    max: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next: u64,
    live: HashMap<u64, Entry>,
}

struct Entry {
    stream: Arc<UnixStream>,
    uid: u32,
    /// Since when it waits for a request line; `None` while one is being answered.
    idle_since: Option<Instant>,
}

/// A connection's place in the table, given up when dropped.
pub(crate) struct Slot {
    conns: Arc<Conns>,
    id: u64,
}

/// What `admit` did to make room.
pub(crate) struct Admitted {
    /// The new connection's place.
    pub slot: Slot,
    /// The uid of the idle connection shut down to make room, if one was.
    pub evicted: Option<u32>,
}

impl Conns {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            table: Mutex::new(Table::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panicking connection thread cannot leave the table half-changed (every change
        // is one insert or remove), so a poisoned lock is still a good table.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives `stream` a place, shutting down the longest-idle connection if the table is
    /// full; `None` if it is full of connections that are all busy with a request.
    pub fn admit(self: &Arc<Self>, stream: Arc<UnixStream>, uid: u32) -> Option<Admitted> {
        let mut t = self.lock();
        let mut evicted = None;
        if t.live.len() >= self.max {
            let oldest = t
                .live
                .iter()
                .filter_map(|(id, e)| e.idle_since.map(|s| (s, *id)))
                .min()
                .map(|(_, id)| id)?;
            let e = t.live.remove(&oldest).expect("just found");
            // Its thread sees end-of-file and exits; the fd closes with its last Arc.
            let _ = e.stream.shutdown(Shutdown::Both);
            evicted = Some(e.uid);
        }
        let id = t.next;
        t.next += 1;
        t.live.insert(
            id,
            Entry {
                stream,
                uid,
                idle_since: Some(Instant::now()),
            },
        );
        Some(Admitted {
            slot: Slot {
                conns: self.clone(),
                id,
            },
            evicted,
        })
    }

    /// How many connections are live.
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }
}

impl Slot {
    /// The connection waits for its next request line (it may be evicted).
    pub fn idle(&self) {
        if let Some(e) = self.conns.lock().live.get_mut(&self.id) {
            e.idle_since = Some(Instant::now());
        }
    }

    /// The connection is answering a request (it is not evicted). False if it was
    /// evicted already: the caller stops.
    pub fn busy(&self) -> bool {
        match self.conns.lock().live.get_mut(&self.id) {
            Some(e) => {
                e.idle_since = None;
                true
            }
            None => false,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.lock().live.remove(&self.id);
    }
}
