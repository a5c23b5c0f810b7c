#!/usr/bin/env bash
# Checks packaging/kubernetes/: every manifest against the Kubernetes JSON schemas that
# kubernetes-validate ships (strict: unknown fields are errors), for the oldest and the
# newest Kubernetes version the manifests target, then the invariants of
# scripts/k8s_invariants.py (what a schema cannot say: the CNI conflist, the daemon's
# options, the host mounts, the probe). `make test` runs it; `make deps` installs the
# validator. Closes with 'manifests: N passed, N failed'; exits 1 on a failure.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target="$root/$target" ;; esac
tools="$target/tools/python"
manifests="${K8S_MANIFESTS:-$root/packaging/kubernetes}"
# Oldest and newest: the manifests use nothing newer than the oldest.
versions=(1.29.0 1.37.0)

passed=0
failed=0
if ! [ -f "$tools/.python" ]; then
  echo "check-k8s-manifests: kubernetes-validate is not installed in $tools: run make deps" >&2
  echo "manifests: 0 passed, 1 failed"
  exit 1
fi
py=$(cat "$tools/.python")
export PYTHONPATH="$tools"

shopt -s nullglob
files=("$manifests"/*.yaml)
if [ "${#files[@]}" -eq 0 ]; then
  echo "check-k8s-manifests: no manifest in $manifests" >&2
  echo "manifests: 0 passed, 1 failed"
  exit 1
fi
for v in "${versions[@]}"; do
  for f in "${files[@]}"; do
    name=${f#"$root"/}
    if out=$("$py" -m kubernetes_validate --strict --kubernetes-version "$v" "$f" 2>&1); then
      echo "ok   schema $v $name"
      passed=$((passed + 1))
    else
      echo "FAIL schema $v $name"
      printf '%s\n' "$out" | sed 's/^/     /'
      failed=$((failed + 1))
    fi
  done
done

# The invariants: one line per check, "ok   ..." or "FAIL ...".
netslot="$target/debug/netslot"
[ -x "$netslot" ] || netslot="$target/release/netslot"
out=$("$py" "$root/scripts/k8s_invariants.py" "$manifests" "$root/packaging/systemd/netslot.service" \
  "$netslot" 2>&1)
status=$?
printf '%s\n' "$out"
ok=$(printf '%s\n' "$out" | grep -c '^ok ')
bad=$(printf '%s\n' "$out" | grep -c '^FAIL ')
passed=$((passed + ok))
failed=$((failed + bad))
if [ "$status" -ne 0 ] && [ "$bad" -eq 0 ]; then
  failed=$((failed + 1))
fi

echo "manifests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
