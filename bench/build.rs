//! Builds the BPF skeleton for src/bpf/kread.bpf.c into OUT_DIR.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/bpf/kread.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("target arch is set by cargo");
    SkeletonBuilder::new()
        .source(SRC)
        .clang_args([
            // uapi <linux/types.h> pulls <asm/types.h> from the multiarch dir.
            format!("-I/usr/include/{arch}-linux-gnu"),
            "-Isrc/bpf".to_string(),
        ])
        .build_and_generate(out.join("kread.skel.rs"))
        .expect("building the kread BPF skeleton (needs clang)");
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-changed=src/bpf/kread.h");
}
