//! Build script: vmlinux.h from the running kernel's BTF, then the XDP and tc skeletons (counters, tap redirect) into OUT_DIR.
//! Leaves `src/` untouched: nothing generated is ever checked in.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use libbpf_cargo::SkeletonBuilder;

/// Each program and the skeleton file generated from it (one object each,
/// so loading one hook never loads the other program).
const PROGRAMS: [(&str, &str); 3] = [
    ("src/bpf/xdp_counters.bpf.c", "xdp_counters.skel.rs"),
    ("src/bpf/tc_counters.bpf.c", "tc_counters.skel.rs"),
    ("src/bpf/tap_redirect.bpf.c", "tap_redirect.skel.rs"),
];
/// Headers every program includes: the layout and limits, the map and its update.
const HEADERS: [&str; 2] = ["src/bpf/counters.h", "src/bpf/count.bpf.h"];
/// Kernel BTF that vmlinux.h is dumped from (CONFIG_DEBUG_INFO_BTF=y).
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    let vmlinux_dir = out.join("vmlinux");
    fs::create_dir_all(&vmlinux_dir).expect("create OUT_DIR/vmlinux");
    write_vmlinux_h(&vmlinux_dir.join("vmlinux.h"));

    for (src, skel) in PROGRAMS {
        let skel = out.join(skel);
        let src_dir = Path::new(src).parent().expect("source has a parent");
        if let Err(err) = SkeletonBuilder::new()
            .source(src)
            .clang_args([
                "-Wall".into(),
                "-Werror".into(),
                format!("-I{}", vmlinux_dir.display()),
                format!("-I{}", src_dir.display()),
            ])
            .build_and_generate(&skel)
        {
            panic!("netslot-bpf: building the skeleton from {src} failed (needs clang): {err:#}");
        }
        println!("cargo:rerun-if-changed={src}");
    }
    for header in HEADERS {
        println!("cargo:rerun-if-changed={header}");
    }
    println!("cargo:rerun-if-env-changed=NETSLOT_BPFTOOL");
}

/// Dumps the running kernel's BTF as C (`bpftool btf dump file ... format c`).
///
/// CO-RE: the object is relocated against the target kernel's BTF at load
/// time, so the header only has to be self-consistent, not match the target.
fn write_vmlinux_h(dst: &Path) {
    if !Path::new(KERNEL_BTF).exists() {
        panic!(
            "netslot-bpf: {KERNEL_BTF} is missing: this kernel was built without \
             CONFIG_DEBUG_INFO_BTF, so vmlinux.h cannot be generated (and CO-RE \
             loading will not work either). Use a kernel with BTF."
        );
    }
    let bpftool = env::var_os("NETSLOT_BPFTOOL").unwrap_or_else(|| "bpftool".into());
    let output = match Command::new(&bpftool)
        .args(["btf", "dump", "file", KERNEL_BTF, "format", "c"])
        .output()
    {
        Ok(output) => output,
        Err(err) => panic!(
            "netslot-bpf: cannot run `{}` ({err}): install the Debian package \
             `bpftool` (apt-get install bpftool), or set NETSLOT_BPFTOOL to its path",
            bpftool.to_string_lossy()
        ),
    };
    if !output.status.success() || output.stdout.is_empty() {
        panic!(
            "netslot-bpf: `{} btf dump file {KERNEL_BTF} format c` failed ({}): {}\n\
             install or upgrade the Debian package `bpftool`",
            bpftool.to_string_lossy(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Rewrite only on change so clang is not re-run for nothing.
    if fs::read(dst).ok().as_deref() != Some(&output.stdout[..]) {
        fs::write(dst, &output.stdout).expect("write vmlinux.h into OUT_DIR");
    }
}
