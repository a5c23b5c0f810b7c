#!/usr/bin/env bash
# Installs netslot from a build, or with `uninstall` removes what it installed. `make install`
# and `make uninstall` call it; it builds nothing. Usage: scripts/install.sh [install|uninstall]
#
# Where things go (environment variables; DESTDIR is prepended to every path but is not part
# of the paths written into the systemd units, as packagers expect):
#   PREFIX=/usr/local            BINDIR=$PREFIX/bin (netslot)
#   CNI_BIN_DIR=/opt/cni/bin     (netslot-cni: where CNI runtimes look for plugins)
#   SYSTEMD_UNIT_DIR=$PREFIX/lib/systemd/system (netslot.socket, netslot.service)
#   MANDIR=$PREFIX/share/man     DOCDIR=$PREFIX/share/doc/netslot (docs/*.md, README.md)
#   BASH_COMPLETION_DIR=$PREFIX/share/bash-completion/completions
#   ZSH_COMPLETION_DIR=$PREFIX/share/zsh/site-functions
#   FISH_COMPLETION_DIR=$PREFIX/share/fish/vendor_completions.d
#   BUILD_DIR=target/release     (where the built netslot and netslot-cni are)
set -euo pipefail

action=${1:-install}
root=$(cd "$(dirname "$0")/.." && pwd)

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
BINDIR=${BINDIR:-$PREFIX/bin}
CNI_BIN_DIR=${CNI_BIN_DIR:-/opt/cni/bin}
SYSTEMD_UNIT_DIR=${SYSTEMD_UNIT_DIR:-$PREFIX/lib/systemd/system}
MANDIR=${MANDIR:-$PREFIX/share/man}
DOCDIR=${DOCDIR:-$PREFIX/share/doc/netslot}
BASH_COMPLETION_DIR=${BASH_COMPLETION_DIR:-$PREFIX/share/bash-completion/completions}
ZSH_COMPLETION_DIR=${ZSH_COMPLETION_DIR:-$PREFIX/share/zsh/site-functions}
FISH_COMPLETION_DIR=${FISH_COMPLETION_DIR:-$PREFIX/share/fish/vendor_completions.d}
BUILD_DIR=${BUILD_DIR:-$root/${CARGO_TARGET_DIR:-target}/release}

for d in PREFIX BINDIR CNI_BIN_DIR SYSTEMD_UNIT_DIR MANDIR DOCDIR; do
  case ${!d} in
    /*) ;;
    *) echo "install: $d must be an absolute path (got '${!d}')" >&2; exit 1 ;;
  esac
done
case $DOCDIR in
  */netslot) ;;
  *) echo "install: DOCDIR must end in /netslot (uninstall removes it whole)" >&2; exit 1 ;;
esac

units=(netslot.socket netslot.service)
docs=("$root"/docs/*.md "$root"/README.md)

install_all() {
  for b in netslot netslot-cni; do
    [ -x "$BUILD_DIR/$b" ] || { echo "install: $BUILD_DIR/$b missing: build first (make build)" >&2; exit 1; }
  done

  gen=$(mktemp -d)
  trap 'rm -rf "$gen"' EXIT
  # Completions and man pages, from the argument definitions of the binary being installed.
  "$BUILD_DIR/netslot" generate --out-dir "$gen"

  install -D -m 0755 "$BUILD_DIR/netslot" "$DESTDIR$BINDIR/netslot"
  install -D -m 0755 "$BUILD_DIR/netslot-cni" "$DESTDIR$CNI_BIN_DIR/netslot-cni"

  install -d -m 0755 "$DESTDIR$SYSTEMD_UNIT_DIR"
  for u in "${units[@]}"; do
    sed -e "s|@BINDIR@|$BINDIR|g" -e "s|@DOCDIR@|$DOCDIR|g" "$root/packaging/systemd/$u" \
      > "$gen/$u"
    if grep -q '@[A-Z_]*@' "$gen/$u"; then
      echo "install: $u has a placeholder left: $(grep -o '@[A-Z_]*@' "$gen/$u" | head -1)" >&2
      exit 1
    fi
    install -m 0644 "$gen/$u" "$DESTDIR$SYSTEMD_UNIT_DIR/$u"
  done

  install -D -m 0644 "$gen/completions/netslot.bash" "$DESTDIR$BASH_COMPLETION_DIR/netslot"
  install -D -m 0644 "$gen/completions/_netslot" "$DESTDIR$ZSH_COMPLETION_DIR/_netslot"
  install -D -m 0644 "$gen/completions/netslot.fish" "$DESTDIR$FISH_COMPLETION_DIR/netslot.fish"
  install -d -m 0755 "$DESTDIR$MANDIR/man1"
  install -m 0644 "$gen"/man/*.1 "$DESTDIR$MANDIR/man1/"
  install -d -m 0755 "$DESTDIR$DOCDIR"
  install -m 0644 "${docs[@]}" "$DESTDIR$DOCDIR/"

  echo "installed netslot in $DESTDIR$BINDIR, netslot-cni in $DESTDIR$CNI_BIN_DIR, units in $DESTDIR$SYSTEMD_UNIT_DIR"
  if [ -z "$DESTDIR" ]; then
    echo "to run the daemon: systemctl daemon-reload && systemctl enable --now netslot.socket"
  fi
}

uninstall_all() {
  rm -f "$DESTDIR$BINDIR/netslot" "$DESTDIR$CNI_BIN_DIR/netslot-cni"
  for u in "${units[@]}"; do rm -f "$DESTDIR$SYSTEMD_UNIT_DIR/$u"; done
  rm -f "$DESTDIR$BASH_COMPLETION_DIR/netslot" "$DESTDIR$ZSH_COMPLETION_DIR/_netslot" \
    "$DESTDIR$FISH_COMPLETION_DIR/netslot.fish"
  rm -f "$DESTDIR$MANDIR/man1/netslot.1" "$DESTDIR$MANDIR"/man1/netslot-*.1
  rm -rf "$DESTDIR$DOCDIR"
  echo "removed netslot from $DESTDIR$PREFIX (and netslot-cni from $DESTDIR$CNI_BIN_DIR)"
}

case $action in
  install) install_all ;;
  uninstall) uninstall_all ;;
  *) echo "usage: $0 [install|uninstall]" >&2; exit 2 ;;
esac
