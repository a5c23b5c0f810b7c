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
# python3-pip: installs the manifest validator below when python3 is the system's.
packages=(clang llvm libelf-dev zlib1g-dev pkg-config bpftool iproute2 util-linux strace
  containernetworking-plugins iptables prometheus python3-pip)

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

# kubernetes-validate (PyPI): validates packaging/kubernetes/ against the Kubernetes JSON
# schemas it ships inside the package (nothing is downloaded when it runs). Installed with
# pip --target into the build directory, not into the system's Python; the interpreter
# that installed it is recorded, since some of its dependencies are compiled for it.
# scripts/check-k8s-manifests.sh runs it.
KUBERNETES_VALIDATE_VERSION=1.37.0
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target="$root/$target" ;; esac
tools="$target/tools/python"
[ -f "$tools/.python" ] && py=$(cat "$tools/.python") || py=
if [ ! -f "$tools/.version" ] || [ "$(cat "$tools/.version")" != "$KUBERNETES_VALIDATE_VERSION" ] ||
  ! [ -x "$py" ] || ! PYTHONPATH="$tools" "$py" -c 'import kubernetes_validate, yaml' 2>/dev/null; then
  py=$(python3 -c 'import sys; print(sys.executable)') || {
    echo "install-deps: python3 (with pip) is needed for the manifest check" >&2
    exit 1
  }
  echo "install-deps: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION in $tools"
  rm -rf "$tools"
  mkdir -p "$tools"
  "$py" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --root-user-action=ignore --target "$tools" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  echo "$py" >"$tools/.python"
  echo "$KUBERNETES_VALIDATE_VERSION" >"$tools/.version"
fi
