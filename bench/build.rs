//! Builds the BPF skeletons of src/bpf/ (kread, syscount) into OUT_DIR.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

/// (program source, skeleton file) pairs.
const PROGRAMS: &[(&str, &str, &str)] = &[
    ("src/bpf/kread.bpf.c", "src/bpf/kread.h", "kread.skel.rs"),
    (
        "src/bpf/syscount.bpf.c",
        "src/bpf/syscount.h",
        "syscount.skel.rs",
    ),
];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("target arch is set by cargo");
    for &(src, header, skel) in PROGRAMS {
        SkeletonBuilder::new()
            .source(src)
            .clang_args([
                // uapi <linux/types.h> pulls <asm/types.h> from the multiarch dir.
                format!("-I/usr/include/{arch}-linux-gnu"),
                "-Isrc/bpf".to_string(),
            ])
            .build_and_generate(out.join(skel))
            .unwrap_or_else(|e| panic!("building the BPF skeleton of {src} (needs clang): {e:?}"));
        println!("cargo:rerun-if-changed={src}");
        println!("cargo:rerun-if-changed={header}");
    }
}
