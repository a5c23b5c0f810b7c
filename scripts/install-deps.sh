#!/usr/bin/env bash
# Installs the system packages netslot needs to build and test, when they are missing.
# Debian/Ubuntu, as root. The Rust toolchain itself must already be installed (rustup).
set -euo pipefail

# clang/llvm/libelf/zlib/pkg-config/bpftool: eBPF programs built by libbpf-cargo.
# iproute2: the tests' independent view of the kernel. util-linux: unshare, setpriv.
# strace: syscall counts in the benchmarks. containernetworking-plugins: the CNI `ptp`
# baseline of the benchmarks and the reference plugins chained after netslot-cni;
# iptables: what the `portmap` plugin drives (and the CNI chaining test reads back).
# prometheus: its `promtool check metrics` validates `netslot serve --metrics` in a test.
packages=(clang llvm libelf-dev zlib1g-dev pkg-config bpftool iproute2 util-linux strace
  containernetworking-plugins iptables prometheus)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "install-deps: cargo is in $HOME/.cargo/bin; add it to PATH" >&2
  else
    echo "install-deps: no Rust toolchain; install one with rustup (https://rustup.rs)" >&2
  fi
  exit 1
fi
