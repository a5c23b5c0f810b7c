//! sysctl: turns IPv6 off on host ends through their `disable_ipv6` sysctl, written as
//! io_uring operations from a thread inside the host namespace.
//!
//! Why: a host end that comes up with IPv6 enabled adds the ff00::/8 multicast route to
//! the namespace's FIB (addrconf_add_dev → addrconf_add_mroute), and every later device's
//! NETDEV_UP walks those routes (rt6_sync_up, fib6_add_rt2node). That is half of what a
//! group change costs per device at N = 4000 and what makes the cost grow with the pool
//! (docs/rtnl-hold.md). `disable_ipv6` is the only switch that keeps a device out of it,
//! and netlink cannot set it (inet6_set_link_af takes only the token and the address
//! generation mode), so the engine writes `/proc/sys/net/ipv6/conf/<dev>/disable_ipv6`.
//!
//! Each write is one short RTNL acquisition of its own (addrconf_disable_ipv6 →
//! dev_disable_change on a device that is still down). It is a trylock: while anyone
//! else holds RTNL the write restarts the system call, which io_uring reports as EINTR;
//! those writes are sent again, in rounds, until they land or `MAX_ROUNDS` have passed.
//!
//! /proc/sys/net resolves to the namespace of the task that opens the file, and io-wq
//! workers share the namespaces of the thread that submits. So the submissions are made
//! from a short-lived thread that enters the host namespace first, and whose workers are
//! therefore created there (the engine's own thread may be in any namespace).

use std::ffi::CString;
use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use crate::netns;
use crate::ring::Ring;

/// How many rounds of EINTR retries before a write is given up (its sub-batch then falls
/// back to the netlink `IPv6 off` group change).
const MAX_ROUNDS: usize = 100;
/// Pause between rounds: long enough for a typical RTNL holder to finish.
const ROUND_PAUSE: Duration = Duration::from_micros(200);

/// What writing `disable_ipv6` did.
#[derive(Debug)]
pub(crate) struct Disabled {
    /// Per device, in the order given: Ok, or the errno of the open or the write.
    pub each: Vec<Result<(), i32>>,
    /// Rounds of writes sent (1 when no write met a held RTNL).
    pub rounds: usize,
}

/// Writes `1` to `disable_ipv6` of each of `devices` (interface names in the namespace
/// `host`), through `ring`, from a thread that enters `host` first.
pub(crate) fn disable_ipv6(
    ring: &mut Ring,
    host: BorrowedFd<'_>,
    devices: &[&str],
) -> io::Result<Disabled> {
    let paths = devices
        .iter()
        .map(|d| CString::new(format!("/proc/sys/net/ipv6/conf/{d}/disable_ipv6")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            netns::enter(host)?;
            write_until_done(ring, &paths)
        })
        .join()
        .map_err(|_| io::Error::other("disable_ipv6 thread panicked"))?
    })
}

/// Sends every write, then again the ones that met a held RTNL, round after round.
fn write_until_done(ring: &mut Ring, paths: &[CString]) -> io::Result<Disabled> {
    let mut each: Vec<Result<(), i32>> = vec![Err(libc::EINTR); paths.len()];
    let mut pending: Vec<usize> = (0..paths.len()).collect();
    let mut rounds = 0;
    while !pending.is_empty() && rounds < MAX_ROUNDS {
        if rounds > 0 {
            std::thread::sleep(ROUND_PAUSE);
        }
        rounds += 1;
        let batch: Vec<CString> = pending.iter().map(|&i| paths[i].clone()).collect();
        let results = ring.write_files(batch, b"1\n")?;
        let mut again = Vec::new();
        for (&i, r) in pending.iter().zip(results) {
            each[i] = match r {
                r if r >= 0 => Ok(()),
                r if -r == libc::EINTR || -r == libc::EAGAIN => {
                    again.push(i);
                    Err(-r)
                }
                r => Err(-r),
            };
        }
        pending = again;
    }
    Ok(Disabled { each, rounds })
}
