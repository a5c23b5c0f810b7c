//! Ownership: netslot never touches what it did not make.
//!
//! Every test plants objects that look like a pool's but are not (a user's namespace
//! pinned by `ip netns add` under a slot's name, a user's veth in the pool's device group,
//! a slot of another pool made by iproute2, another daemon's attachment, another pool
//! under a symlinked netns directory), runs netslot commands around them, and checks after
//! each command, from the kernel's own listings (`ip -j`, /proc/self/mountinfo, bpffs), that
//! each one is exactly as planted: same ifindex, group and MAC, the pin still an nsfs mount,
//! the addresses inside still there, the namespace behind the pin the same one.
//!
//! Beside the decoys, the file covers what keeps pools apart and records honest: a second
//! `up`, `gc`, `down` or daemon aimed at a pool it does not own refuses or leaves it whole;
//! a `gc` killed mid-repair leaves the next `gc` a committed pool, not garbage; an `up` in
//! which every slot failed commits nothing; overlapping CIDRs, shared MACs, reserved CIDRs
//! and a jumbo MTU with XDP are refused before anything is made.
//!
//! Each test runs in its own private world (network and mount namespaces, tmpfs /run,
//! private bpffs): nothing survives it. Expected failures of netslot are captured (exit
//! code and output per step), never allowed to stop a script.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use netslot_kernel_tests::*;
use serde_json::Value;

/// Shell functions of every script.
///
/// `snap NAME` writes what the kernel lists now to `$D/NAME.*`: links with details,
/// `ip netns list`, routes, mountinfo, the addresses inside every namespace named in
/// `$WATCH_NS`, the bpffs directory of netslot and the ownership records.
/// `step NAME CMD...` runs a command that may fail (keeping its exit code and output in
/// `$D/NAME.rc`, `.out`, `.err`), then takes `snap NAME`.
/// `started PID SOCKET` waits up to 20 s for a daemon to listen; says `up` or why not.
/// Background processes are listed in `$bg`, and SIGKILLed when the script ends.
const PRELUDE: &str = r#"
bg=""
trap 'for p in $bg; do kill -9 $p 2>/dev/null || true; done' EXIT
WATCH_NS=""
snap() {
  ip -j -d link show > $D/$1.links.json
  ip -j netns list > $D/$1.netns.json
  ip -j route show > $D/$1.routes.json
  cat /proc/self/mountinfo > $D/$1.mountinfo
  for n in $WATCH_NS; do
    ip -n $n -j addr show > $D/$1.addr-$n.json 2>/dev/null || echo null > $D/$1.addr-$n.json
  done
  ls -A /sys/fs/bpf/netslot > $D/$1.bpf 2>/dev/null || true
  ls -A /run/netslot > $D/$1.records 2>/dev/null || true
  grep -rl committed /run/netslot > $D/$1.committed 2>/dev/null || true
}
step() {
  name=$1; shift
  rc=0; "$@" > $D/$name.out 2> $D/$name.err || rc=$?
  echo $rc > $D/$name.rc
  snap $name
}
started() {
  i=0
  until [ -S "$2" ]; do
    kill -0 "$1" 2>/dev/null || { echo "exited before listening" > $D/started-$1; return 0; }
    i=$((i+1)); [ $i -lt 400 ] || { echo "not listening after 20 s" > $D/started-$1; return 0; }
    sleep 0.05
  done
  echo up > $D/started-$1
}
"#;

/// The address every namespace decoy carries on its `lo`.
const DECOY_ADDR: &str = "192.0.2.99/32";

/// An object made by iproute2 that looks like a pool's but is not netslot's.
#[derive(Debug, Clone, Copy)]
enum Decoy {
    /// A user's namespace pinned by `ip netns add` at /run/netns/NAME, with
    /// [`DECOY_ADDR`] on its `lo`.
    Netns(&'static str),
    /// A user's veth pair (both ends in the host namespace) in a device group.
    Veth {
        name: &'static str,
        peer: &'static str,
        group: u32,
    },
    /// A slot of another pool, made by iproute2: namespace NAME pinned in /run/netns, host
    /// end NAME in `group`, `eth0` inside.
    ForeignSlot { name: &'static str, group: u32 },
}

impl Decoy {
    /// Shell commands that make it (and have `snap` watch its namespace).
    fn plant(self) -> String {
        match self {
            Self::Netns(n) => format!(
                "ip netns add {n}; ip -n {n} addr add {DECOY_ADDR} dev lo; WATCH_NS=\"$WATCH_NS {n}\"\n"
            ),
            Self::Veth { name, peer, group } => {
                format!("ip link add {name} group {group} type veth peer name {peer}\n")
            }
            Self::ForeignSlot { name, group } => format!(
                "ip netns add {name}; ip link add {name} group {group} type veth peer name eth0 netns {name}; WATCH_NS=\"$WATCH_NS {name}\"\n"
            ),
        }
    }

    /// Shell commands that remove it (the test's own cleanup between steps).
    fn remove(self) -> String {
        match self {
            Self::Veth { name, .. } => format!("ip link del {name} 2>/dev/null || true\n"),
            Self::Netns(n) | Self::ForeignSlot { name: n, .. } => {
                format!("ip netns del {n} 2>/dev/null || true\n")
            }
        }
    }

    /// The namespace it pins, if any.
    fn netns(self) -> Option<&'static str> {
        match self {
            Self::Netns(n) | Self::ForeignSlot { name: n, .. } => Some(n),
            Self::Veth { .. } => None,
        }
    }

    /// How it differs in `now` from what `planted` showed right after it was made; empty
    /// when it is exactly as planted.
    fn differences(self, planted: &Snap, now: &Snap) -> Vec<String> {
        let mut out = Vec::new();
        let mut same_link = |dev: &str, group: Option<u32>| match (planted.link(dev), now.link(dev))
        {
            (None, _) => out.push(format!(
                "{dev} was never planted (missing in {})",
                planted.name
            )),
            (Some(_), None) => out.push(format!("{dev} is gone")),
            (Some(was), Some(is)) => {
                for key in ["ifindex", "address", "mtu", "group"] {
                    if was[key] != is[key] {
                        out.push(format!("{dev} {key} was {} now {}", was[key], is[key]));
                    }
                }
                if let Some(g) = group.filter(|g| link_group(is) != Some(*g)) {
                    out.push(format!(
                        "{dev} is in group {} (planted in {g})",
                        is["group"]
                    ));
                }
            }
        };
        match self {
            Self::Veth { name, peer, group } => {
                same_link(name, Some(group));
                same_link(peer, None);
            }
            Self::ForeignSlot { name, group } => same_link(name, Some(group)),
            Self::Netns(_) => {}
        }
        if let Some(ns) = self.netns() {
            match (
                planted.pinned_ns("/run/netns", ns),
                now.pinned_ns("/run/netns", ns),
            ) {
                (_, None) => out.push(format!("/run/netns/{ns} is no nsfs mount any more")),
                (Some(was), Some(is)) if was != is => out.push(format!(
                    "/run/netns/{ns} pins another namespace ({is}, planted {was})"
                )),
                _ => {}
            }
            if !now.netns.iter().any(|n| n == ns) {
                out.push(format!("`ip netns list` lacks {ns}"));
            }
            match self {
                Self::Netns(_) => {
                    if !has_addr(&now.addrs(ns), "lo", DECOY_ADDR) {
                        out.push(format!("{DECOY_ADDR} is no longer on lo inside {ns}"));
                    }
                }
                _ => {
                    let mac = |s: &Snap| {
                        s.addrs(ns)
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|l| l["ifname"] == "eth0")
                            .map(|l| l["address"].clone())
                    };
                    if mac(now).is_none() || mac(now) != mac(planted) {
                        out.push(format!(
                            "eth0 inside {ns} is not the planted one ({:?} was {:?})",
                            mac(now),
                            mac(planted)
                        ));
                    }
                }
            }
        }
        out
    }
}

/// Shell commands that plant every decoy of `decoys`.
fn plant_decoys(decoys: &[Decoy]) -> String {
    decoys.iter().map(|d| d.plant()).collect()
}

/// Checks, from the kernel's listings in snapshot `now`, that every decoy is exactly as
/// snapshot `planted` showed it. Records each difference once, at the first snapshot that
/// shows it (a decoy destroyed by one command stays destroyed after the next).
fn check_decoys(problems: &mut Problems, decoys: &[Decoy], planted: &Snap, now: &Snap) {
    for d in decoys {
        for diff in d.differences(planted, now) {
            if problems.seen.insert(diff.clone()) {
                problems.fail(format!("after {}: {diff}", now.name));
            }
        }
    }
}

/// Whether `ip -j addr` output lists `addr` (`a.b.c.d/len`) on device `dev`.
fn has_addr(addrs: &Value, dev: &str, addr: &str) -> bool {
    addrs.as_array().into_iter().flatten().any(|l| {
        l["ifname"] == dev
            && l["addr_info"].as_array().into_iter().flatten().any(|a| {
                format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]) == addr
            })
    })
}

/// What the kernel listed at one point of a script (written by the shell's `snap`).
struct Snap {
    name: String,
    links: Vec<Value>,
    netns: Vec<String>,
    routes: Vec<Value>,
    mountinfo: String,
    bpf: Vec<String>,
    records: Vec<String>,
    committed: String,
    addrs: BTreeMap<String, Value>,
}

/// A JSON file of the scratch directory; `[]` when empty (iproute2 prints nothing for an
/// empty list) and null when the script wrote `null` (the namespace could not be entered).
fn json_or_empty(dir: &Path, name: &str) -> Value {
    let text = read(dir, name);
    if text.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"))
}

fn words(dir: &Path, name: &str) -> Vec<String> {
    read(dir, name)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

impl Snap {
    fn load(dir: &Path, name: &str) -> Self {
        let list = |v: Value| v.as_array().cloned().unwrap_or_default();
        let mut addrs = BTreeMap::new();
        let lead = format!("{name}.addr-");
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(ns) = file
                .strip_prefix(&lead)
                .and_then(|r| r.strip_suffix(".json"))
            {
                addrs.insert(ns.to_owned(), json_or_empty(dir, &file));
            }
        }
        Self {
            name: name.to_owned(),
            links: list(json_or_empty(dir, &format!("{name}.links.json"))),
            netns: list(json_or_empty(dir, &format!("{name}.netns.json")))
                .iter()
                .filter_map(|n| n["name"].as_str().map(str::to_owned))
                .collect(),
            routes: list(json_or_empty(dir, &format!("{name}.routes.json"))),
            mountinfo: read(dir, &format!("{name}.mountinfo")),
            bpf: words(dir, &format!("{name}.bpf")),
            records: words(dir, &format!("{name}.records")),
            committed: read(dir, &format!("{name}.committed")),
            addrs,
        }
    }

    fn link(&self, name: &str) -> Option<&Value> {
        self.links.iter().find(|l| l["ifname"] == name)
    }

    /// The nsfs mounts directly under `dir` (as the kernel resolved the path): name and
    /// the namespace pinned (`net:[inode]`, mountinfo's root field).
    fn nsfs_mounts(&self, dir: &str) -> Vec<(String, String)> {
        self.mountinfo
            .lines()
            .filter_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let fields: Vec<&str> = left.split(' ').collect();
                let point = Path::new(fields.get(4)?);
                let fstype = right.split(' ').next()?;
                if fstype != "nsfs" || point.parent() != Some(Path::new(dir)) {
                    return None;
                }
                let name = point.file_name()?.to_str()?.to_owned();
                Some((name, (*fields.get(3)?).to_owned()))
            })
            .collect()
    }

    /// Names of the nsfs mounts directly under `dir`.
    fn pins(&self, dir: &str) -> Vec<String> {
        let mut out: Vec<String> = self.nsfs_mounts(dir).into_iter().map(|(n, _)| n).collect();
        sort_names(&mut out);
        out.dedup();
        out
    }

    /// The namespace pinned at `<dir>/<name>` (`net:[inode]`), if it is an nsfs mount.
    fn pinned_ns(&self, dir: &str, name: &str) -> Option<String> {
        self.nsfs_mounts(dir)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, ns)| ns)
    }

    /// Pins under `dir` named `<prefix><n>`, except `not` (decoys that share the prefix).
    fn pool_pins(&self, dir: &str, prefix: &str, not: &[&str]) -> Vec<String> {
        self.pins(dir)
            .into_iter()
            .filter(|p| is_slot_name(p, prefix) && !not.contains(&p.as_str()))
            .collect()
    }

    /// Host ends of the pool (base group `group`): links in its groups named `<prefix><n>`.
    fn host_ends(&self, prefix: &str, group: u32) -> Vec<String> {
        let mut out: Vec<String> = self
            .links
            .iter()
            .filter(|l| in_pool(l, group))
            .filter_map(|l| l["ifname"].as_str())
            .filter(|n| is_slot_name(n, prefix))
            .map(str::to_owned)
            .collect();
        sort_names(&mut out);
        out
    }

    /// `ip -j addr` inside namespace `ns` (null when it could not be entered).
    fn addrs(&self, ns: &str) -> Value {
        self.addrs.get(ns).cloned().unwrap_or(Value::Null)
    }
}

fn is_slot_name(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Sorts `p2 < p10`.
fn sort_names(names: &mut [String]) {
    names.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
}

/// `<prefix>0` … `<prefix><n-1>`.
fn slot_names(prefix: &str, ids: std::ops::Range<u32>) -> Vec<String> {
    ids.map(|i| format!("{prefix}{i}")).collect()
}

/// Everything that went wrong in one test, reported together (so that a failure shows
/// every command that touched what it should not have, not only the first).
#[derive(Default)]
struct Problems {
    found: Vec<String>,
    /// Decoy differences already reported.
    seen: std::collections::HashSet<String>,
}

impl Problems {
    fn fail(&mut self, what: String) {
        self.found.push(what);
    }

    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.found.push(what());
        }
    }

    fn check_eq<T: PartialEq + std::fmt::Debug>(&mut self, is: T, want: T, what: &str) {
        if is != want {
            self.found
                .push(format!("{what}: {is:?}, expected {want:?}"));
        }
    }

    fn finish(self, log: &str) {
        assert!(
            self.found.is_empty(),
            "{} problem(s):\n  {}\n{log}",
            self.found.len(),
            self.found.join("\n  ")
        );
    }
}

/// A step's exit code.
fn rc(dir: &Path, step: &str) -> i32 {
    let text = read(dir, &format!("{step}.rc"));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{step}.rc: {e}: {text:?}"))
}

/// A step's stdout and stderr, for messages.
fn said(dir: &Path, step: &str) -> String {
    let out = std::fs::read_to_string(dir.join(format!("{step}.out"))).unwrap_or_default();
    let err = std::fs::read_to_string(dir.join(format!("{step}.err"))).unwrap_or_default();
    let mut text = format!("{}{}", out.trim(), err.trim());
    if text.len() > 600 {
        let mut cut = 600;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" …");
    }
    format!("[{}]", text.replace('\n', " | "))
}

/// Runs `script` (after [`PRELUDE`]) in a private world.
fn world(script: &str, env: &[(&str, &str)]) -> (String, PathBuf, Scratch) {
    let (log, scratch) = in_private_world_env(&format!("{PRELUDE}\n{script}"), env);
    let dir = scratch.to_path_buf();
    (log, dir, scratch)
}

/// Checks that the pool `prefix`/`group` pinned in `netns_dir` has exactly the slots
/// `want` after `snap`: host ends and pins (except decoy pins `not`).
fn check_pool(
    p: &mut Problems,
    snap: &Snap,
    (prefix, group, netns_dir): (&str, u32, &str),
    not: &[&str],
    want: &[String],
) {
    let what = format!("after {}: pool {prefix}/{group}", snap.name);
    let ends = snap.host_ends(prefix, group);
    p.check(ends == want, || {
        format!("{what}: host ends {}", name_diff(&ends, want))
    });
    let pins = snap.pool_pins(netns_dir, prefix, not);
    p.check(pins == want, || {
        format!("{what}: pins in {netns_dir} {}", name_diff(&pins, want))
    });
}

/// `is` against `want`, short: counts and a few names missing or extra.
fn name_diff(is: &[String], want: &[String]) -> String {
    let few = |names: Vec<&String>| {
        let more = names.len().saturating_sub(6);
        let mut s: Vec<&str> = names.iter().take(6).map(|n| n.as_str()).collect();
        let tail = format!("+{more}");
        if more > 0 {
            s.push(&tail);
        }
        format!("[{}]", s.join(" "))
    };
    let missing: Vec<&String> = want.iter().filter(|n| !is.contains(n)).collect();
    let extra: Vec<&String> = is.iter().filter(|n| !want.contains(n)).collect();
    format!(
        "{} where {} expected: missing {}, extra {}",
        is.len(),
        want.len(),
        few(missing),
        few(extra)
    )
}

const DEFAULT_POOL: (&str, u32, &str) = ("ns", 7600, "/run/netns");

/// The checks themselves: decoys left alone pass, and each way of touching one (its
/// address removed, its namespace re-made under the same name, its veth re-made with the
/// same name and group) is seen. Without this, a check that sees nothing would pass.
#[test]
fn decoy_checks_tell_untouched_from_touched() {
    if !require_root("decoy_checks_tell_untouched_from_touched") {
        return;
    }
    let decoys = [
        Decoy::Netns("ns900"),
        Decoy::ForeignSlot {
            name: "ns50",
            group: 7700,
        },
        Decoy::Veth {
            name: "dec0",
            peer: "dec1",
            group: 7600,
        },
    ];
    let (log, dir, _scratch) = world(
        &format!(
            r#"{}snap planted
            snap untouched
            ip -n ns900 addr del {DECOY_ADDR} dev lo
            ip link del ns50; ip netns del ns50; ip netns add ns50
            ip link del dec0; ip link add dec0 group 7600 type veth peer name dec1
            snap touched
            "#,
            plant_decoys(&decoys)
        ),
        &[],
    );
    let planted = Snap::load(&dir, "planted");
    let mut p = Problems::default();
    check_decoys(&mut p, &decoys, &planted, &Snap::load(&dir, "untouched"));
    assert!(
        p.found.is_empty(),
        "untouched decoys differ: {:?}\n{log}",
        p.found
    );
    check_decoys(&mut p, &decoys, &planted, &Snap::load(&dir, "touched"));
    let seen = p.found.join("\n");
    for expect in [
        "192.0.2.99/32 is no longer on lo inside ns900",
        "/run/netns/ns50 pins another namespace",
        "ns50 is gone",
        "dec0 ifindex was",
        "dec1 ifindex was",
    ] {
        assert!(seen.contains(expect), "not seen: {expect}\nseen:\n{seen}");
    }
}

#[test]
fn up_refuses_a_user_namespace_named_like_a_slot() {
    if !require_root("up_refuses_a_user_namespace_named_like_a_slot") {
        return;
    }
    let decoys = [Decoy::Netns("ns1")];
    let (log, dir, _scratch) = world(
        &format!(
            "{}snap planted\nstep up $NS up --slots 3\n",
            plant_decoys(&decoys)
        ),
        &[],
    );
    let mut p = Problems::default();
    let planted = Snap::load(&dir, "planted");
    p.check(rc(&dir, "up") != 0, || {
        format!("up exited 0 beside the user's ns1 {}", said(&dir, "up"))
    });
    p.check(said(&dir, "up").contains("/run/netns/ns1"), || {
        format!("up did not name /run/netns/ns1: {}", said(&dir, "up"))
    });
    check_decoys(&mut p, &decoys, &planted, &Snap::load(&dir, "up"));
    p.finish(&log);
}

#[test]
fn down_and_gc_without_a_pool_leave_a_user_namespace() {
    if !require_root("down_and_gc_without_a_pool_leave_a_user_namespace") {
        return;
    }
    let decoys = [Decoy::Netns("ns7")];
    let (log, dir, _scratch) = world(
        &format!(
            "{}snap planted\nstep down $NS down\nstep gc $NS gc\n",
            plant_decoys(&decoys)
        ),
        &[],
    );
    let mut p = Problems::default();
    let planted = Snap::load(&dir, "planted");
    for step in ["down", "gc"] {
        p.check(rc(&dir, step) == 0, || {
            format!(
                "{step} without a pool exited {}: {}",
                rc(&dir, step),
                said(&dir, step)
            )
        });
        check_decoys(&mut p, &decoys, &planted, &Snap::load(&dir, step));
    }
    p.finish(&log);
}

#[test]
fn another_group_with_the_same_prefix_never_touches_the_pool() {
    if !require_root("another_group_with_the_same_prefix_never_touches_the_pool") {
        return;
    }
    let (log, dir, _scratch) = world(
        r#"
        step up $NS up --slots 4
        step up-7700 $NS up --slots 2 --group 7700
        step gc-7700 $NS gc --group 7700
        step down-7700 $NS down --group 7700
        "#,
        &[],
    );
    let mut p = Problems::default();
    p.check(rc(&dir, "up") == 0, || format!("up: {}", said(&dir, "up")));
    p.check(rc(&dir, "up-7700") != 0, || {
        format!(
            "up --group 7700 exited 0 over pool 7600's names {}",
            said(&dir, "up-7700")
        )
    });
    let want = slot_names("ns", 0..4);
    for step in ["up", "up-7700", "gc-7700", "down-7700"] {
        check_pool(&mut p, &Snap::load(&dir, step), DEFAULT_POOL, &[], &want);
    }
    p.finish(&log);
}

#[test]
fn another_prefix_in_the_same_group_never_touches_the_pool() {
    if !require_root("another_prefix_in_the_same_group_never_touches_the_pool") {
        return;
    }
    let (log, dir, _scratch) = world(
        r#"
        step up $NS up --slots 4
        step up-xx $NS up --slots 2 --prefix xx
        step stats $NS stats
        "#,
        &[],
    );
    let mut p = Problems::default();
    p.check(rc(&dir, "up") == 0, || format!("up: {}", said(&dir, "up")));
    p.check(rc(&dir, "up-xx") != 0, || {
        format!(
            "up --prefix xx exited 0 in pool 7600's group {}",
            said(&dir, "up-xx")
        )
    });
    let after = Snap::load(&dir, "up-xx");
    p.check(after.bpf.contains(&"7600".to_owned()), || {
        format!(
            "/sys/fs/bpf/netslot/7600 is gone after up --prefix xx (bpffs has {:?})",
            after.bpf
        )
    });
    p.check(rc(&dir, "stats") == 0, || {
        format!(
            "stats exited {}: {}",
            rc(&dir, "stats"),
            said(&dir, "stats")
        )
    });
    check_pool(&mut p, &after, DEFAULT_POOL, &[], &slot_names("ns", 0..4));
    p.finish(&log);
}

#[test]
fn down_with_another_prefix_leaves_the_pool_of_its_group() {
    if !require_root("down_with_another_prefix_leaves_the_pool_of_its_group") {
        return;
    }
    let (log, dir, _scratch) = world(
        r#"
        step up $NS up --slots 2 --prefix a --group 5 --cidr 100.64.0.0/24
        step down-b $NS down --prefix b --group 5
        "#,
        &[],
    );
    let mut p = Problems::default();
    p.check(rc(&dir, "up") == 0, || format!("up: {}", said(&dir, "up")));
    let want = slot_names("a", 0..2);
    check_pool(
        &mut p,
        &Snap::load(&dir, "up"),
        ("a", 5, "/run/netns"),
        &[],
        &want,
    );
    let after = Snap::load(&dir, "down-b");
    check_pool(&mut p, &after, ("a", 5, "/run/netns"), &[], &want);
    p.check(p.found.is_empty() || rc(&dir, "down-b") != 0, || {
        format!(
            "down --prefix b exited 0 and removed pool a's objects {}",
            said(&dir, "down-b")
        )
    });
    p.finish(&log);
}

#[test]
fn the_daemon_leaves_a_cli_pool_alone() {
    if !require_root("the_daemon_leaves_a_cli_pool_alone") {
        return;
    }
    let (log, dir, _scratch) = world(
        r#"
        step up $NS up --slots 3
        $NS serve --socket /run/d1.sock > $D/serve.out 2> $D/serve.err & S=$!; bg="$bg $S"
        started $S /run/d1.sock; echo $S > $D/serve.pid
        snap serving
        sleep 1
        snap serving-later
        kill -TERM $S 2>/dev/null || true
        rc=0; wait $S || rc=$?; echo $rc > $D/serve.rc
        snap stopped
        "#,
        &[],
    );
    let mut p = Problems::default();
    p.check(rc(&dir, "up") == 0, || format!("up: {}", said(&dir, "up")));
    let pid = read(&dir, "serve.pid");
    let started = read(&dir, &format!("started-{}", pid.trim()));
    p.check(started.trim() == "up", || {
        format!(
            "the daemon did not start: {started} {}",
            said(&dir, "serve")
        )
    });
    p.check(rc(&dir, "serve") == 0, || {
        format!(
            "the daemon exited {} on SIGTERM {}",
            rc(&dir, "serve"),
            said(&dir, "serve")
        )
    });
    let want = slot_names("ns", 0..3);
    for step in ["up", "serving", "serving-later", "stopped"] {
        check_pool(&mut p, &Snap::load(&dir, step), DEFAULT_POOL, &[], &want);
    }
    p.finish(&log);
}

#[test]
fn a_daemon_attachment_survives_a_second_daemon_down_and_gc() {
    if !require_root("a_daemon_attachment_survives_a_second_daemon_down_and_gc") {
        return;
    }
    let cni = netslot().with_file_name("netslot-cni");
    assert!(
        cni.exists(),
        "{} missing: run `cargo build -p netslot-cli`",
        cni.display()
    );
    let (log, dir, _scratch) = world(
        r#"
        $NS serve --socket /run/d1.sock > $D/d1.out 2> $D/d1.err & D1=$!; bg="$bg $D1"
        started $D1 /run/d1.sock; echo $D1 > $D/d1.pid
        ip netns add ctr; WATCH_NS="$WATCH_NS ctr"
        echo '{"cniVersion":"1.1.0","name":"slots","type":"netslot-cni","socket":"/run/d1.sock"}' \
          | CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_NETNS=/run/netns/ctr CNI_IFNAME=eth0 \
            CNI_PATH=/usr/lib/cni $CNI > $D/add.json 2> $D/add.err || true
        snap attached
        t0=$(date +%s.%N)
        step second-daemon timeout 10 $NS serve --socket /run/d2.sock --group 7601
        t1=$(date +%s.%N)
        echo "$t0 $t1" | awk '{printf "%.1f\n", $2-$1}' > $D/second-daemon.seconds
        step down $NS down
        step gc $NS gc --prefix nsl --group 7601
        kill -TERM $D1 2>/dev/null || true; wait $D1 || true
        "#,
        &[("CNI", cni.to_str().unwrap())],
    );
    let mut p = Problems::default();
    let pid = read(&dir, "d1.pid");
    let started = read(&dir, &format!("started-{}", pid.trim()));
    assert_eq!(
        started.trim(),
        "up",
        "the first daemon did not start: {log}"
    );
    let add = json_or_empty(&dir, "add.json");
    let host_end = add["interfaces"][0]["name"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let address = add["ips"][0]["address"].as_str().unwrap_or("").to_owned();
    assert!(
        !host_end.is_empty() && !address.is_empty(),
        "the ADD through the first daemon failed: {add} {}",
        read(&dir, "add.err")
    );
    p.check_eq(host_end.as_str(), "nsl0", "the attachment's host end");
    let attached = Snap::load(&dir, "attached");
    let planted = attached.link(&host_end).cloned().unwrap_or(Value::Null);
    p.check(in_pool(&planted, 7601), || {
        format!(
            "the daemon's host end {host_end} is in group {} (its default pool is 7601)",
            planted["group"]
        )
    });
    p.check(address.starts_with("100.65."), || {
        format!("the daemon's address {address} is not from its default 100.65.0.0/16")
    });
    let secs: f64 = read(&dir, "second-daemon.seconds").trim().parse().unwrap();
    let second = rc(&dir, "second-daemon");
    p.check(second != 0 && second != 124, || {
        format!(
            "a second daemon with --group 7601 {} {}",
            if second == 124 {
                "was still running after 10 s".to_owned()
            } else {
                format!("exited {second} after {secs} s")
            },
            said(&dir, "second-daemon")
        )
    });
    p.check(secs < 5.0, || {
        format!("the second daemon took {secs} s to exit")
    });
    p.check(rc(&dir, "gc") != 0, || {
        format!(
            "gc --prefix nsl --group 7601 exited 0 while the daemon owns the pool {}",
            said(&dir, "gc")
        )
    });
    for step in ["attached", "second-daemon", "down", "gc"] {
        let now = Snap::load(&dir, step);
        let is = now.link(&host_end);
        p.check(
            is.is_some_and(|l| l["ifindex"] == planted["ifindex"]),
            || format!("after {step}: the attachment's host end {host_end} is gone or remade"),
        );
        p.check(has_addr(&now.addrs("ctr"), "eth0", &address), || {
            format!("after {step}: {address} is no longer on eth0 inside the container")
        });
    }
    p.finish(&log);
}

#[test]
fn a_symlinked_netns_dir_is_one_pool_and_gc_keeps_it() {
    if !require_root("a_symlinked_netns_dir_is_one_pool_and_gc_keeps_it") {
        return;
    }
    let (log, dir, _scratch) = world(
        r#"
        mkdir -p /run/real; ln -s /run/real /run/link
        step up $NS up --slots 3 --netns-dir /run/link
        step up-again $NS up --slots 3 --netns-dir /run/link
        step gc $NS gc --netns-dir /run/link
        "#,
        &[],
    );
    let mut p = Problems::default();
    p.check(rc(&dir, "up") == 0, || format!("up: {}", said(&dir, "up")));
    p.check(rc(&dir, "up-again") != 0, || {
        format!(
            "a second up in the same (symlinked) directory exited 0 {}",
            said(&dir, "up-again")
        )
    });
    p.check(rc(&dir, "gc") == 0, || {
        format!("gc exited {}: {}", rc(&dir, "gc"), said(&dir, "gc"))
    });
    let want = slot_names("ns", 0..3);
    for step in ["up", "up-again", "gc"] {
        check_pool(
            &mut p,
            &Snap::load(&dir, step),
            ("ns", 7600, "/run/real"),
            &[],
            &want,
        );
    }
    p.finish(&log);
}

#[test]
fn a_gc_killed_mid_repair_leaves_the_next_gc_a_committed_pool() {
    if !require_root("a_gc_killed_mid_repair_leaves_the_next_gc_a_committed_pool") {
        return;
    }
    let (log, dir, _scratch) = world(
        r#"
        step up $NS up --slots 1500 --prefix r --group 7800 --cidr 100.66.0.0/16
        # Slots 800..1499 lose their pins, so gc must delete their 700 host ends one by
        # one. A second bind mount outside the netns directory keeps each namespace (and
        # so its veth pair) alive: without it the kernel would destroy the namespace, and
        # the host end with it, as soon as the pin goes.
        mkdir /run/keep
        i=800; while [ $i -lt 1500 ]; do
          touch /run/keep/r$i; mount --bind /run/netns/r$i /run/keep/r$i
          umount -l /run/netns/r$i; rm /run/netns/r$i
          i=$((i+1))
        done
        snap broken
        # Kill the first gc once its repair is under way (50 host ends deleted), or after
        # 1.5 s, whichever comes first; it must still be running then.
        ends() { ip -o link show 2>/dev/null | grep -cE '^[0-9]+: r[0-9]+@' || true; }
        $NS gc --prefix r --group 7800 > $D/gc1.out 2> $D/gc1.err & G=$!; bg="$bg $G"
        i=0; while [ $i -lt 15 ] && [ "$(ends)" -gt 1450 ]; do sleep 0.1; i=$((i+1)); done
        if kill -0 $G 2>/dev/null; then echo running; else echo finished; fi > $D/gc1.state
        kill -9 $G 2>/dev/null || true; wait $G 2>/dev/null || true
        snap killed
        step gc2 $NS gc --prefix r --group 7800
        "#,
        &[],
    );
    let mut p = Problems::default();
    assert_eq!(rc(&dir, "up"), 0, "up: {}", said(&dir, "up"));
    let pool = ("r", 7800, "/run/netns");
    let broken = Snap::load(&dir, "broken");
    assert_eq!(broken.host_ends("r", 7800).len(), 1500, "{log}");
    assert_eq!(broken.pool_pins("/run/netns", "r", &[]).len(), 800, "{log}");
    assert_eq!(
        read(&dir, "gc1.state").trim(),
        "running",
        "the first gc finished before the kill: it must land mid-repair {}",
        said(&dir, "gc1")
    );
    let killed = Snap::load(&dir, "killed");
    eprintln!(
        "at the kill: {} host ends, {} pins",
        killed.host_ends("r", 7800).len(),
        killed.pool_pins("/run/netns", "r", &[]).len()
    );
    p.check(rc(&dir, "gc2") == 0, || {
        format!(
            "the second gc exited {}: {}",
            rc(&dir, "gc2"),
            said(&dir, "gc2")
        )
    });
    check_pool(
        &mut p,
        &Snap::load(&dir, "gc2"),
        pool,
        &[],
        &slot_names("r", 0..800),
    );
    p.finish(&log);
}

/// Finds the largest open-file limit (from 30 down) under which `up --slots 3` makes no
/// slot at all, as the kernel shows it, and leaves that run's state for `snap up`. Each
/// run that made slots is taken down before the next. How many descriptors netslot needs
/// before its first slot depends on the build, so the limit is searched, not fixed.
/// Every slot fails: the netns directory is on a read-only filesystem, so pinning (the
/// last step) fails for each slot, and each is rolled back. (An open-file limit no longer
/// serves: `up` refuses a call that cannot fit it before any kernel call.)
const EVERY_SLOT_FAILS: &str = r#"
mkdir -p /run/ro && mount -t tmpfs -o ro netslot-ro /run/ro
rc=0; $NS up --slots 3 --netns-dir /run/ro/netns > $D/up.out 2> $D/up.err || rc=$?
echo $rc > $D/up.rc
snap up
umount /run/ro
"#;

#[test]
fn an_up_in_which_every_slot_fails_commits_nothing() {
    if !require_root("an_up_in_which_every_slot_fails_commits_nothing") {
        return;
    }
    let (log, dir, _scratch) = world(EVERY_SLOT_FAILS, &[]);
    let mut p = Problems::default();
    let text = format!("{}{}", read(&dir, "up.out"), read(&dir, "up.err"));
    // Every slot failed at pinning, each named, not at start-up (which names no slot).
    assert!(
        text.contains("Read-only file system")
            && ["ns0", "ns1", "ns2"].iter().all(|n| text.contains(n)),
        "up did not fail every slot at pinning: {text}"
    );
    assert_ne!(
        rc(&dir, "up"),
        0,
        "an up that made nothing exited 0: {text}"
    );
    let after = Snap::load(&dir, "up");
    p.check(after.committed.trim().is_empty(), || {
        format!(
            "an up whose every slot failed left a committed record {} (up exited {}: {text})",
            after.committed.trim(),
            rc(&dir, "up")
        )
    });
    p.check(!after.bpf.contains(&"7600".to_owned()), || {
        format!(
            "/sys/fs/bpf/netslot/7600 exists after an up that made no slot ({:?})",
            after.bpf
        )
    });
    check_pool(&mut p, &after, DEFAULT_POOL, &[], &[]);
    p.finish(&log);
}

#[test]
fn overlapping_address_pools_are_refused() {
    if !require_root("overlapping_address_pools_are_refused") {
        return;
    }
    let (log, dir, _scratch) = world(
        r#"
        step up-a $NS up --slots 2 --prefix a --group 10
        step up-b $NS up --slots 2 --prefix b --group 11
        "#,
        &[],
    );
    let mut p = Problems::default();
    assert_eq!(rc(&dir, "up-a"), 0, "up a: {}", said(&dir, "up-a"));
    p.check(rc(&dir, "up-b") != 0, || {
        format!(
            "up b in the same 100.64.0.0/16 as pool a exited 0 {}",
            said(&dir, "up-b")
        )
    });
    let after = Snap::load(&dir, "up-b");
    let routes: Vec<&Value> = after
        .routes
        .iter()
        .filter(|r| r["dst"] == "100.64.0.0/31")
        .collect();
    p.check(routes.len() == 1, || {
        format!(
            "the kernel has {} routes for 100.64.0.0/31: {routes:?}",
            routes.len()
        )
    });
    p.check(after.link("b0").is_none(), || "b0 exists".to_owned());
    check_pool(
        &mut p,
        &after,
        ("a", 10, "/run/netns"),
        &[],
        &slot_names("a", 0..2),
    );
    p.finish(&log);
}

#[test]
fn host_end_macs_are_unique_across_pools() {
    if !require_root("host_end_macs_are_unique_across_pools") {
        return;
    }
    let (log, dir, _scratch) = world(
        r#"
        step up-a $NS up --slots 1 --prefix a --group 10 --cidr 100.64.0.0/24
        step up-b $NS up --slots 1 --prefix b --group 11 --cidr 100.64.1.0/24
        "#,
        &[],
    );
    assert_eq!(rc(&dir, "up-a"), 0, "up a: {}", said(&dir, "up-a"));
    assert_eq!(rc(&dir, "up-b"), 0, "up b: {}", said(&dir, "up-b"));
    let after = Snap::load(&dir, "up-b");
    let mac = |dev: &str| {
        after
            .link(dev)
            .map(|l| l["address"].clone())
            .unwrap_or_else(|| panic!("{dev} missing: {log}"))
    };
    assert_ne!(mac("a0"), mac("b0"), "a0 and b0 share a MAC address");
}

#[test]
fn reserved_cidrs_are_refused_before_any_kernel_call() {
    if !require_root("reserved_cidrs_are_refused_before_any_kernel_call") {
        return;
    }
    let mut p = Problems::default();
    let mut logs = String::new();
    for cidr in ["0.0.0.0/24", "127.0.0.0/24", "224.0.0.0/24", "240.0.0.0/24"] {
        let (log, dir, _scratch) = world(&format!("step up $NS up --slots 1 --cidr {cidr}\n"), &[]);
        logs.push_str(&log);
        let after = Snap::load(&dir, "up");
        p.check(rc(&dir, "up") != 0, || {
            format!("--cidr {cidr} was accepted {}", said(&dir, "up"))
        });
        let links: Vec<&str> = after
            .links
            .iter()
            .filter_map(|l| l["ifname"].as_str())
            .collect();
        p.check(links == ["lo"], || {
            format!("--cidr {cidr}: links {links:?}")
        });
        p.check(after.pins("/run/netns").is_empty(), || {
            format!("--cidr {cidr}: pins {:?}", after.pins("/run/netns"))
        });
        p.check(after.records.is_empty(), || {
            format!("--cidr {cidr}: ownership records {:?}", after.records)
        });
        p.check(after.bpf.is_empty(), || {
            format!("--cidr {cidr}: bpffs {:?}", after.bpf)
        });
    }
    p.finish(&logs);
}

#[test]
fn a_jumbo_mtu_is_refused_with_xdp_and_works_without() {
    if !require_root("a_jumbo_mtu_is_refused_with_xdp_and_works_without") {
        return;
    }
    let (log, dir, _scratch) = world(
        r#"
        step xdp $NS up --slots 1 --mtu 9000
        step no-xdp $NS up --slots 1 --mtu 9000 --no-xdp
        step down $NS down
        "#,
        &[],
    );
    let mut p = Problems::default();
    let xdp = Snap::load(&dir, "xdp");
    p.check(rc(&dir, "xdp") != 0, || {
        format!("--mtu 9000 with XDP exited 0 {}", said(&dir, "xdp"))
    });
    p.check(said(&dir, "xdp").to_lowercase().contains("xdp"), || {
        format!(
            "--mtu 9000 was refused without naming XDP: {}",
            said(&dir, "xdp")
        )
    });
    let links: Vec<&str> = xdp
        .links
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .collect();
    p.check(links == ["lo"], || {
        format!("--mtu 9000 with XDP left links {links:?}")
    });
    p.check(xdp.pins("/run/netns").is_empty(), || {
        format!("--mtu 9000 with XDP left pins {:?}", xdp.pins("/run/netns"))
    });
    p.check(xdp.records.is_empty(), || {
        format!(
            "--mtu 9000 with XDP left ownership records {:?}",
            xdp.records
        )
    });
    p.check(xdp.bpf.is_empty(), || {
        format!("--mtu 9000 with XDP left bpffs entries {:?}", xdp.bpf)
    });
    p.check(rc(&dir, "no-xdp") == 0, || {
        format!("--mtu 9000 --no-xdp failed: {}", said(&dir, "no-xdp"))
    });
    let jumbo = Snap::load(&dir, "no-xdp");
    p.check(jumbo.link("ns0").is_some_and(|l| l["mtu"] == 9000), || {
        format!("ns0 with --mtu 9000: {:?}", jumbo.link("ns0"))
    });
    p.check(rc(&dir, "down") == 0, || {
        format!("down: {}", said(&dir, "down"))
    });
    check_pool(&mut p, &Snap::load(&dir, "down"), DEFAULT_POOL, &[], &[]);
    p.finish(&log);
}

#[test]
fn decoys_survive_every_command() {
    if !require_root("decoys_survive_every_command") {
        return;
    }
    let user_ns = Decoy::Netns("ns900");
    let other_pool = Decoy::ForeignSlot {
        name: "ns50",
        group: 7700,
    };
    let user_veth = Decoy::Veth {
        name: "dec0",
        peer: "dec1",
        group: 7600,
    };
    let ns_decoys = [user_ns, other_pool];
    let script = format!(
        r#"
        {plant_ns}{plant_veth}snap planted
        step up-beside-dec0 $NS up --slots 3
        {remove_veth}step up $NS up --slots 3
        {plant_veth}snap replanted
        step status $NS status
        step gc-dry $NS gc --dry-run
        step gc $NS gc
        step down $NS down
        {remove_veth}$NS up --slots 3 --hold > $D/hold.out 2> $D/hold.err & H=$!; bg="$bg $H"
        i=0; until grep -q '^holding' $D/hold.err; do
          kill -0 $H 2>/dev/null || break
          i=$((i+1)); [ $i -lt 400 ] || break
          sleep 0.05
        done
        if grep -q '^holding' $D/hold.err; then echo up; else echo no; fi > $D/hold.state
        {plant_veth}snap holding
        kill -9 $H 2>/dev/null || true; wait $H 2>/dev/null || true
        snap killed
        step gc-killed $NS gc
        "#,
        plant_ns = plant_decoys(&ns_decoys),
        plant_veth = user_veth.plant(),
        remove_veth = user_veth.remove(),
    );
    let (log, dir, _scratch) = world(&script, &[]);
    let mut p = Problems::default();
    let planted = Snap::load(&dir, "planted");
    let not = ["ns900", "ns50"];
    let three = slot_names("ns", 0..3);

    // A foreign device in the pool's group: up refuses and leaves everything alone.
    p.check(rc(&dir, "up-beside-dec0") != 0, || {
        format!(
            "up exited 0 with dec0 in group 7600 {}",
            said(&dir, "up-beside-dec0")
        )
    });
    check_decoys(
        &mut p,
        &[user_ns, other_pool, user_veth],
        &planted,
        &Snap::load(&dir, "up-beside-dec0"),
    );

    p.check(rc(&dir, "up") == 0, || format!("up: {}", said(&dir, "up")));
    let up = Snap::load(&dir, "up");
    check_decoys(&mut p, &ns_decoys, &planted, &up);
    check_pool(&mut p, &up, DEFAULT_POOL, &not, &three);

    let replanted = Snap::load(&dir, "replanted");
    p.check(rc(&dir, "status") == 0, || {
        format!(
            "status exited {}: {}",
            rc(&dir, "status"),
            said(&dir, "status")
        )
    });
    for step in ["status", "gc-dry", "gc"] {
        let now = Snap::load(&dir, step);
        check_decoys(&mut p, &ns_decoys, &planted, &now);
        check_decoys(&mut p, &[user_veth], &replanted, &now);
        check_pool(&mut p, &now, DEFAULT_POOL, &not, &three);
        p.check(now.bpf.contains(&"7600".to_owned()), || {
            format!("after {step}: the pool's XDP pins are gone ({:?})", now.bpf)
        });
    }
    let down = Snap::load(&dir, "down");
    check_decoys(&mut p, &ns_decoys, &planted, &down);
    check_decoys(&mut p, &[user_veth], &replanted, &down);
    check_pool(&mut p, &down, DEFAULT_POOL, &not, &[]);
    p.check(!down.bpf.contains(&"7600".to_owned()), || {
        format!("after down: the pool's XDP pins are left ({:?})", down.bpf)
    });

    let held = read(&dir, "hold.state");
    p.check(held.trim() == "up", || {
        format!(
            "up --hold never said it was holding: {}",
            read(&dir, "hold.err").trim()
        )
    });
    let holding = Snap::load(&dir, "holding");
    check_decoys(&mut p, &ns_decoys, &planted, &holding);
    p.check_eq(
        holding.host_ends("ns", 7600),
        three.clone(),
        "host ends of up --hold",
    );
    for step in ["killed", "gc-killed"] {
        let now = Snap::load(&dir, step);
        check_decoys(&mut p, &ns_decoys, &planted, &now);
        check_decoys(&mut p, &[user_veth], &holding, &now);
    }
    let collected = Snap::load(&dir, "gc-killed");
    check_pool(&mut p, &collected, DEFAULT_POOL, &not, &[]);
    p.finish(&log);
}
