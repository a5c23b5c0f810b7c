//! rtnl_count: runs a command under the RTNL counter and prints who took RTNL.
//! Usage: `rtnl_count CMD [ARGS...]` (root). Settles 300 ms after the command exits.

use std::process::{Command, ExitCode};
use std::time::Duration;

use netslot_bench::rtnl::RtnlCounter;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: rtnl_count CMD [ARGS...]");
        return ExitCode::from(2);
    };
    let counter = match RtnlCounter::start() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("counter unavailable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = counter.address();
    let mut child = match Command::new(cmd).args(rest).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spawn {cmd}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pid = child.id();
    let status = child.wait();
    counter.settle(Duration::from_millis(300), Duration::from_secs(10));
    let r = counter.stop();
    println!(
        "rtnl_mutex {:#x} ({:?}), owner +{}",
        addr.mutex, addr.source, addr.owner_offset
    );
    println!(
        "command {status:?}: own {} others {}",
        r.count_by(&[pid]),
        r.count_others(&[pid])
    );
    for p in r.by_pid() {
        println!(
            "  pid {:>7} {:<32} {}",
            p.pid,
            p.comm.unwrap_or_default(),
            p.count
        );
    }
    for a in r.acquisitions() {
        println!(
            "  t={} pid {} tid {} hold {:?} ns",
            a.released_ns, a.pid, a.tid, a.hold_ns
        );
    }
    println!(
        "writes {} unclassified {} lost {} throttled {} longest hold {:?} histogram {:?}",
        r.writes(),
        r.unclassified_writes(),
        r.lost_samples(),
        r.throttled(),
        r.longest_hold(),
        r.hold_histogram()
    );
    ExitCode::SUCCESS
}
