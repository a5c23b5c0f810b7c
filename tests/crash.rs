//! Crashes: `netslot up --slots 4000` (and `down`) killed with SIGKILL at points chosen by
//! watching kernel state, then `netslot gc`; nothing of the pool may remain, and nothing
//! of a neighbouring pool (a committed pool of 40 slots in the same host namespace, netns
//! directory, run directory and bpffs) may be lost. Each kill point runs in its own
//! private network and mount namespace (tmpfs /run, private bpffs) with its own prefix
//! and group.
//!
//! "No namespace left" is checked three ways, all kernel-reported and scoped to the test:
//! - no nsfs bind mount in the private mount namespace (/proc/self/mountinfo);
//! - `ip netns list-id` in the test's host namespace is empty once cleanup_net has run:
//!   every slot namespace that got a veth pair has an nsid there (its host end reports
//!   `link_netnsid`), and the kernel drops the id only when the namespace is destroyed.
//!   (iproute2 prints only the first part of a long nsid dump, about 130 entries, so the
//!   figure before gc is a lower bound; "empty" is exact.)
//! - the killed process is reaped, so its sockets, which held the namespaces it had made
//!   but not linked yet, are closed; such namespaces have no other holder.
//!
//! The machine-wide net_namespace slab count is recorded for the report, not asserted:
//! other processes (e.g. a benchmark) create namespaces too.

use netslot_kernel_tests::*;
use serde_json::Value;

const SLOTS: &str = "4000";

/// Shell functions shared by every kill point. `wait_until CMD N PID` polls a
/// kernel-reported count until it reaches N, failing if PID exits first.
const PRELUDE: &str = r#"
# Host ends of the pool: its base group G and its sub-batch groups G + k * 65536.
links()  { ip -o link show 2>/dev/null | awk -v g="$G" '{ for (i = 1; i < NF; i++)
             if ($i == "group" && $(i+1) ~ /^[0-9]+$/ && $(i+1) % 65536 == g) n++ }
           END { print n + 0 }'; }
pins()   { grep -c " /run/netns/$P[0-9]" /proc/self/mountinfo || true; }
fds()    { ls /proc/"$1"/fd 2>/dev/null | wc -l; }
# A dump racing with namespace destruction may be interrupted (NLM_F_DUMP_INTR): retry.
# The neighbouring pool: prefix nb, group 7969, its own range; committed by `up`.
NB=40
# nsids of the victim's namespaces: all of the host namespace's but the neighbour's.
nsids()  { until out=$(ip -j netns list-id 2>/dev/null); do sleep 0.05; done
           all=$(echo "${out:-[]}" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
           echo $((all - NB)); }
slab()   { awk '$1=="net_namespace"{print $2}' /proc/slabinfo; }
# Polls a kernel-reported count until it reaches a threshold, then SIGKILLs the victim
# at once (the figure is written after the kill, so writing it costs no time).
kill_when() { # cmd threshold pid [le]
  while :; do
    v=$($1)
    if [ "${4:-ge}" = le ]; then [ "$v" -le "$2" ] && break; else [ "$v" -ge "$2" ] && break; fi
    kill -0 "$3" 2>/dev/null || { echo "process $3 ended before $1 reached $2 (at $v)" >&2; exit 1; }
    sleep 0.01
  done
  if kill -9 "$3" 2>/dev/null; then echo killed; else echo missed; fi > $D/killed
  echo "$1=$v"
}
snapshot() { # name
  echo "links=$(links) pins=$(pins) nsids=$(nsids) bpf=$(find /sys/fs/bpf/netslot/$G 2>/dev/null | wc -l) records=$(ls -A /run/netslot 2>/dev/null | grep -c -- "-group$G\." || true) slab=$(slab)" > $D/$1
}
$NS up --slots $NB --prefix nb --group 7969 --cidr 100.66.0.0/24 > $D/nb-up.out
"#;

const AFTER_KILL: &str = r#"
wait $VICTIM 2>/dev/null || true
[ "$(cat $D/killed)" = killed ] || { echo "the victim exited before the kill" >&2; exit 1; }
snapshot before-gc
t0=$(date +%s.%N)
$NS gc --prefix $P --group $G --json > $D/gc.json
t1=$(date +%s.%N)
echo "$t0 $t1" | awk '{printf "%.3f\n", $2-$1}' > $D/gc-seconds
# cleanup_net runs in a kernel worker: wait (up to 120 s) for the last nsid to go.
i=0; while [ "$(nsids)" -gt 0 ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
echo "$i" > $D/settle-ticks
snapshot after
grep -c nsfs /proc/self/mountinfo > $D/nsfs-mounts || true
until ip -j -d link show > $D/after-links.json 2>/dev/null; do sleep 0.1; done
find /sys/fs/bpf -mindepth 1 > $D/after-bpf
ls -A /run/netns /run/netslot > $D/after-ls 2>&1 || true
$NS status --prefix nb --group 7969 --json > $D/nb-after.json
"#;

fn kv(text: &str, key: &str) -> i64 {
    text.split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} missing in {text:?}"))
}

fn crash_and_collect(name: &str, prefix: &str, group: u32, kill: &str) {
    let script = format!("{PRELUDE}\n{kill}\n{AFTER_KILL}");
    let g = group.to_string();
    let (log, dir) = in_private_world_env(&script, &[("P", prefix), ("G", &g), ("N", SLOTS)]);
    assert_eq!(
        read(&dir, "killed").trim(),
        "killed",
        "{name}: exited before the kill"
    );
    let at_kill = read(&dir, "at-kill");
    let before = read(&dir, "before-gc");
    let after = read(&dir, "after");
    let gc = json(&dir, "gc.json");
    eprintln!(
        "{name}: at kill: {} | before gc: {} | gc {} s, removed {} host ends (group delete: {}), {} namespaces, {} stale files, bpf {} | after: {} | settle {} x 100 ms | neighbour kept {} slots",
        at_kill.trim(),
        before.trim(),
        read(&dir, "gc-seconds").trim(),
        gc["host_ends"].as_array().map_or(0, Vec::len),
        gc["by_group_delete"],
        gc["namespaces"].as_array().map_or(0, Vec::len),
        gc["stale_files"].as_array().map_or(0, Vec::len),
        gc["bpf_pins"],
        after.trim(),
        read(&dir, "settle-ticks").trim(),
        json(&dir, "nb-after.json")["slots"]
            .as_array()
            .map_or(0, Vec::len),
    );
    assert_eq!(gc["errors"], Value::Array(vec![]), "{name}: {log}");
    assert_eq!(
        gc["whole_pool"], true,
        "{name}: a crashed pool is all garbage"
    );
    // gc had something to do: at least the XDP pins `up` made first.
    assert!(gc["bpf_pins"].is_string(), "{name}: {gc}");
    assert_eq!(kv(&after, "links"), 0, "{name}: host ends left: {after}");
    assert_eq!(
        kv(&after, "pins"),
        0,
        "{name}: namespace pins left: {after}"
    );
    assert_eq!(kv(&after, "nsids"), 0, "{name}: namespaces alive: {after}");
    assert_eq!(kv(&after, "bpf"), 0, "{name}: BPF pins left: {after}");
    assert_eq!(kv(&after, "records"), 0, "{name}: ownership record left");
    assert_eq!(
        read(&dir, "nsfs-mounts").trim(),
        "40",
        "{name}: nsfs mounts (the neighbour's 40 only)"
    );
    let left: Vec<Value> = json(&dir, "after-links.json")
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["group"] == g.as_str() || l["ifname"].as_str().is_some_and(|n| n.starts_with(prefix))
        })
        .cloned()
        .collect();
    assert!(left.is_empty(), "{name}: devices left: {left:?}");
    let bpf = read(&dir, "after-bpf");
    assert!(
        !bpf.lines()
            .any(|l| l.contains(&format!("/netslot/{group}"))),
        "{name}: bpffs: {bpf}"
    );
    let ls = read(&dir, "after-ls");
    assert!(
        !ls.split_whitespace()
            .any(|f| f.starts_with(prefix) || f.contains(&format!("-group{group}."))),
        "{name}: files left: {ls}"
    );
    // Nothing of the neighbouring pool was lost: all 40 slots complete, still committed.
    let nb = json(&dir, "nb-after.json");
    let slots = nb["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 40, "{name}: neighbour: {nb}");
    assert!(
        slots.iter().all(|s| s["host_up"] == true
            && s["pinned"].is_string()
            && !s["host_addrs"].as_array().unwrap().is_empty()),
        "{name}: neighbour incomplete: {nb}"
    );
    assert_eq!(nb["record"], "committed", "{name}: {nb}");
    assert!(
        bpf.contains("/netslot/7969"),
        "{name}: neighbour's counters gone: {bpf}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigkill_at_any_point_then_gc_leaves_nothing() {
    if !require_root("sigkill_at_any_point_then_gc_leaves_nothing") {
        return;
    }
    // While the pool thread is creating namespaces: the process holds 300 sockets (one
    // per namespace), read from /proc/PID/fd.
    crash_and_collect(
        "during namespace creation",
        "kns",
        7961,
        r#"$NS up --slots $N --prefix $P --group $G > $D/up.out 2>&1 & VICTIM=$!
        f() { fds $VICTIM; }
        echo "$(kill_when f 300 $VICTIM) links=$(links)" > $D/at-kill"#,
    );
    // Mid-batch: half the host ends exist in the group.
    crash_and_collect(
        "mid-batch",
        "kmb",
        7962,
        r#"$NS up --slots $N --prefix $P --group $G > $D/up.out 2>&1 & VICTIM=$!
        echo "$(kill_when links 2000 $VICTIM)" > $D/at-kill"#,
    );
    // While pinning: the first bind mounts exist (pinning 4000 takes about 0.3 s, so the
    // kill lands as soon as the poll sees one).
    crash_and_collect(
        "during pinning",
        "kpn",
        7963,
        r#"$NS up --slots $N --prefix $P --group $G > $D/up.out 2>&1 & VICTIM=$!
        echo "$(kill_when pins 1 $VICTIM) links=$(links) pins-after-kill=$(pins)" > $D/at-kill"#,
    );
    // MicroVM slots while pinning: every namespace pinned so far also holds its slot's
    // persistent tap; gc's removal of the pins must take the taps with the namespaces
    // (nsids 0 after gc), none may be left anywhere (a tap refunded to the initial
    // namespace is what tests/microvm.rs rules out).
    crash_and_collect(
        "microVM slots, during pinning",
        "kmv",
        7965,
        r#"$NS up --slots $N --prefix $P --group $G --kind microvm --tap-uid 4242 > $D/up.out 2>&1 & VICTIM=$!
        echo "$(kill_when pins 1 $VICTIM) links=$(links) pins-after-kill=$(pins)" > $D/at-kill"#,
    );
    // During `down`: the group is gone and the first pins are.
    crash_and_collect(
        "during down",
        "kdn",
        7964,
        r#"$NS up --slots $N --prefix $P --group $G > $D/up.out 2>&1
        $NS down --prefix $P --group $G > $D/down.out 2>&1 & VICTIM=$!
        echo "$(kill_when pins 3900 $VICTIM le) links=$(links) pins-after-kill=$(pins)" > $D/at-kill"#,
    );
}
