//! warm: the daemon's warm pool: the ready slots, the handed-out ones and who holds them.
//! No kernel calls here: refills, recycling and teardown are the engine thread's.
//!
//! It is shared: a connection thread answers an `acquire` itself when a slot is ready
//! (popped under the lock, no kernel call, no wait for the engine thread, which may be in
//! the middle of a batch), and the engine thread adds slots (refills, recycled releases),
//! takes released ones back and drains it at shutdown.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use netslot::daemon::protocol::{ErrorCode, PooledSlot, Response};
use netslot::Slot;

use super::metrics::METRICS;

/// The warm pool.
pub(crate) struct Warm {
    state: Mutex<State>,
    /// `--max-acquired-per-uid`: most handed-out slots a uid other than 0 may hold.
    limit: usize,
    /// Claims answered here (for the daemon's `requests` count).
    answered: AtomicU64,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Slot>,
    handed_out: BTreeMap<String, HandedOut>,
    /// Handed-out slots held per uid (uid 0 not counted).
    acquired_of: BTreeMap<u32, usize>,
}

/// A slot handed out by `acquire`, and to whom.
struct HandedOut {
    slot: Slot,
    uid: u32,
}

/// What a claim of a ready slot came to.
pub(crate) enum Claim {
    /// A slot was handed out, or the uid is over its limit: the answer.
    Answered(Box<Response>),
    /// No slot is ready: the engine thread must provision one.
    Empty,
}

impl Warm {
    pub fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            limit,
            answered: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere leaves the pool's lists consistent (every change is one push
        // or pop), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands out the oldest ready slot to `uid` (request `id`), unless the uid already
    /// holds its limit.
    pub fn claim(&self, id: u64, uid: u32) -> Claim {
        self.claim_from(id, uid, None)
    }

    /// Hands out `slot`, made for this request, to `uid`; with the uid over its limit,
    /// the refusal, and the slot joins the ready ones.
    pub fn grant(&self, id: u64, uid: u32, slot: Slot) -> Response {
        match self.claim_from(id, uid, Some(slot)) {
            Claim::Answered(r) => *r,
            Claim::Empty => unreachable!("a slot was given"),
        }
    }

    fn claim_from(&self, id: u64, uid: u32, given: Option<Slot>) -> Claim {
        let mut s = self.lock();
        let holds = s.acquired_of.get(&uid).copied().unwrap_or(0);
        if uid != 0 && holds >= self.limit {
            self.answered.fetch_add(1, Ordering::Relaxed);
            s.ready.extend(given);
            let limit = self.limit;
            return Claim::Answered(Box::new(Response::err(
                id,
                ErrorCode::NotAllowed,
                format!(
                    "acquire: uid {uid} holds {holds} warm-pool slots, its limit \
                     (--max-acquired-per-uid {limit}); release one first"
                ),
            )));
        }
        let Some(slot) = given.or_else(|| s.ready.pop_front()) else {
            return Claim::Empty;
        };
        let spec = slot.spec();
        let mut r = Response::ok(id);
        r.slot = Some(PooledSlot {
            name: spec.name.clone(),
            netns: slot.pinned_at().map(PathBuf::from).unwrap_or_default(),
            address: format!("{}/{}", spec.slot_ip, spec.prefix_len),
            gateway: spec.host_ip.to_string(),
            microvm: netslot::microvm::GuestNetwork::of(spec, slot.pinned_at()),
        });
        let name = spec.name.clone();
        s.handed_out.insert(name, HandedOut { slot, uid });
        if uid != 0 {
            *s.acquired_of.entry(uid).or_insert(0) += 1;
        }
        METRICS.warm_slots.set(s.ready.len() as i64);
        self.answered.fetch_add(1, Ordering::Relaxed);
        Claim::Answered(Box::new(r))
    }

    /// Takes back the handed-out slot `name` from `uid` (uid 0 may give back anyone's);
    /// the refusal's code and text otherwise.
    pub fn take_back(&self, name: &str, uid: u32) -> Result<Slot, (ErrorCode, String)> {
        let mut s = self.lock();
        match s.handed_out.get(name) {
            None => Err((ErrorCode::NotFound, format!("no handed-out slot {name:?}"))),
            Some(h) if uid != 0 && h.uid != uid => Err((
                ErrorCode::NotAllowed,
                format!(
                    "release: slot {name} was acquired by uid {}, not uid {uid}",
                    h.uid
                ),
            )),
            Some(_) => {
                let h = s.handed_out.remove(name).expect("just found");
                if let Some(n) = s.acquired_of.get_mut(&h.uid) {
                    *n -= 1;
                    if *n == 0 {
                        s.acquired_of.remove(&h.uid);
                    }
                }
                Ok(h.slot)
            }
        }
    }

    /// Adds slots at the end of the ready list.
    pub fn add(&self, slots: impl IntoIterator<Item = Slot>) {
        let mut s = self.lock();
        s.ready.extend(slots);
        METRICS.warm_slots.set(s.ready.len() as i64);
    }

    /// Claims answered by [`Warm::claim`].
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Slots ready to be handed out.
    pub fn ready(&self) -> usize {
        self.lock().ready.len()
    }

    /// Slots handed out and not given back.
    pub fn handed_out(&self) -> usize {
        self.lock().handed_out.len()
    }

    /// Every slot, ready or handed out, for the teardown.
    pub fn drain(&self) -> Vec<Slot> {
        let mut s = self.lock();
        let mut all: Vec<Slot> = s.ready.drain(..).collect();
        all.extend(
            std::mem::take(&mut s.handed_out)
                .into_values()
                .map(|h| h.slot),
        );
        s.acquired_of.clear();
        METRICS.warm_slots.set(0);
        all
    }
}
