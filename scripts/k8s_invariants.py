"""What the Kubernetes schemas cannot check in packaging/kubernetes/.

Usage: k8s_invariants.py MANIFEST_DIR NETSLOT_SERVICE_UNIT NETSLOT_BINARY
Prints one line per check, "ok   <what>" or "FAIL <what>: <why>"; exits 1 if any failed.
scripts/check-k8s-manifests.sh runs it with the PyYAML that kubernetes-validate installs.
"""

import json
import pathlib
import re
import subprocess
import sys

import yaml

results = []


def check(what, cond, why=""):
    results.append((what, bool(cond), why))


def load(manifest_dir):
    docs = []
    for path in sorted(pathlib.Path(manifest_dir).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append(doc)
    return docs


def one(docs, kind):
    found = [d for d in docs if d.get("kind") == kind]
    check(f"exactly one {kind}", len(found) == 1, f"found {len(found)}")
    return found[0] if found else {}


def flag_value(args, flag):
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def main():
    manifest_dir, unit_path, netslot = sys.argv[1:4]
    docs = load(manifest_dir)
    namespace = one(docs, "Namespace")
    ns = namespace.get("metadata", {}).get("name")
    for d in docs:
        if d.get("kind") != "Namespace":
            check(f"{d.get('kind')} is in namespace {ns}",
                  d.get("metadata", {}).get("namespace") == ns)
    check("the namespace allows privileged pods",
          namespace.get("metadata", {}).get("labels", {})
          .get("pod-security.kubernetes.io/enforce") == "privileged")

    # The CNI configuration: valid JSON, the plugin chain in order.
    cm = one(docs, "ConfigMap")
    data = cm.get("data", {})
    conflists = {k: v for k, v in data.items() if k.endswith(".conflist")}
    check("the ConfigMap holds one .conflist", len(conflists) == 1, f"keys {list(data)}")
    conflist_key = next(iter(conflists), None)
    conf = {}
    try:
        conf = json.loads(conflists.get(conflist_key, ""))
        check("the conflist is valid JSON", True)
    except ValueError as e:
        check("the conflist is valid JSON", False, str(e))
    types = [p.get("type") for p in conf.get("plugins", [])]
    check("the conflist chains netslot-cni, tuning, portmap in that order",
          types == ["netslot-cni", "tuning", "portmap"], f"got {types}")
    check("the conflist's cniVersion is 1.0.0", conf.get("cniVersion") == "1.0.0",
          f"got {conf.get('cniVersion')!r}")
    check("the conflist has a name", bool(conf.get("name")))
    portmap = next((p for p in conf.get("plugins", []) if p.get("type") == "portmap"), {})
    check("portmap asks for portMappings",
          portmap.get("capabilities", {}).get("portMappings") is True)

    ds = one(docs, "DaemonSet")
    spec = ds.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    check("hostNetwork: true", pod.get("hostNetwork") is True)
    check("hostPID: true (the host's /proc/1/ns/net)", pod.get("hostPID") is True)
    check("tolerates every taint",
          {"operator": "Exists"} in pod.get("tolerations", []), f"{pod.get('tolerations')}")
    strategy = spec.get("updateStrategy", {})
    check("RollingUpdate with maxUnavailable 1 and maxSurge 0",
          strategy.get("type") == "RollingUpdate"
          and strategy.get("rollingUpdate", {}).get("maxUnavailable") == 1
          and strategy.get("rollingUpdate", {}).get("maxSurge", 0) == 0, f"{strategy}")

    unit = pathlib.Path(unit_path).read_text()
    m = re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M)
    check("terminationGracePeriodSeconds equals the unit's TimeoutStopSec",
          m and pod.get("terminationGracePeriodSeconds") == int(m.group(1)),
          f"{pod.get('terminationGracePeriodSeconds')} vs {m and m.group(1)}")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}

    def host_path_of(mount):
        return volumes.get(mount["name"], {}).get("hostPath", {}).get("path")

    # The init container: copies the plugin and the conflist to the node.
    inits = pod.get("initContainers", [])
    check("one init container", len(inits) == 1, f"found {len(inits)}")
    init = inits[0] if inits else {}
    init_script = " ".join(init.get("command", []) + init.get("args", []))
    init_hosts = {host_path_of(m): m["mountPath"] for m in init.get("volumeMounts", [])}
    for host_dir, copied in (("/opt/cni/bin", "netslot-cni"),
                             ("/etc/cni/net.d", conflist_key or "?")):
        mount = init_hosts.get(host_dir)
        check(f"the init container mounts the node's {host_dir}", mount is not None)
        check(f"the init container writes {copied} to the node's {host_dir}",
              mount is not None and f"{mount}/{copied}" in init_script)
    cm_mounts = [m["mountPath"] for m in init.get("volumeMounts", [])
                 if volumes.get(m["name"], {}).get("configMap", {}).get("name")
                 == cm.get("metadata", {}).get("name")]
    check("the init container copies the conflist from the ConfigMap",
          any(f"{p}/{conflist_key}" in init_script for p in cm_mounts))

    # The daemon.
    containers = pod.get("containers", [])
    check("one container", len(containers) == 1, f"found {len(containers)}")
    c = containers[0] if containers else {}
    check("the image is the same in both containers", c.get("image") == init.get("image"))
    check("the container is privileged",
          c.get("securityContext", {}).get("privileged") is True)
    args = c.get("command", []) + c.get("args", [])
    check("the container runs netslot serve",
          len(args) >= 2 and args[0].endswith("/netslot") and args[1] == "serve", f"{args}")
    socket = flag_value(args, "--socket") or "/run/netslot/netslot.sock"
    check("netslot-cni in the conflist uses the daemon's socket",
          next((p for p in conf.get("plugins", []) if p.get("type") == "netslot-cni"), {})
          .get("socket", "/run/netslot/netslot.sock") == socket)
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    for path, propagation in (("/run/netslot", "Bidirectional"),
                              ("/run/netns", "Bidirectional"),
                              ("/sys/fs/bpf", "Bidirectional")):
        m = mounts.get(path, {})
        check(f"the daemon mounts the node's {path} ({propagation})",
              m and host_path_of(m) == path and m.get("mountPropagation") == propagation,
              f"{m}")
    check("the socket's directory is the mounted /run/netslot",
          str(pathlib.PurePosixPath(socket).parent) == "/run/netslot", socket)

    # Every option given to the daemon is one `netslot serve --help` lists.
    help_text = ""
    try:
        help_text = subprocess.run([netslot, "serve", "--help"], capture_output=True,
                                   text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        check(f"netslot serve --help runs ({netslot})", False, str(e))
    if help_text:
        for flag in (a for a in args[2:] if a.startswith("--")):
            check(f"netslot serve accepts {flag}",
                  re.search(rf"(^|\s){re.escape(flag)}[\s=]", help_text) is not None)

    # Metrics: --metrics on the port the annotations and the container port name.
    metrics = flag_value(args, "--metrics") or ""
    port = metrics.rsplit(":", 1)[-1]
    annotations = spec.get("template", {}).get("metadata", {}).get("annotations", {})
    check("--metrics is given", bool(metrics))
    check("the scrape annotation is on", annotations.get("prometheus.io/scrape") == "true")
    check("the scrape annotation's port is --metrics' port",
          annotations.get("prometheus.io/port") == port, f"{annotations} vs {metrics}")
    check("the container declares the metrics port",
          any(str(p.get("containerPort")) == port for p in c.get("ports", [])))
    env = {e["name"] for e in c.get("env", [])}
    for var in re.findall(r"\$\((\w+)\)", " ".join(args)):
        check(f"$({var}) in the arguments is defined", var in env)

    # Readiness: netslot-cni's STATUS against the daemon's socket.
    probe = c.get("readinessProbe", {})
    probe_cmd = " ".join(probe.get("exec", {}).get("command", []))
    check("the readiness probe runs netslot-cni STATUS",
          "CNI_COMMAND=STATUS" in probe_cmd and "netslot-cni" in probe_cmd, probe_cmd)
    m = re.search(r"'(\{.*\})'", probe_cmd)
    try:
        probe_conf = json.loads(m.group(1)) if m else {}
    except ValueError:
        probe_conf = {}
    check("the probe's configuration is JSON with cniVersion 1.1.0 (STATUS needs it)",
          probe_conf.get("cniVersion") == "1.1.0" and probe_conf.get("type") == "netslot-cni")
    check("the probe asks the daemon's socket",
          probe_conf.get("socket", "/run/netslot/netslot.sock") == socket)
    check("no liveness probe (a restart tears the node's attachments down)",
          "livenessProbe" not in c)
    res = c.get("resources", {})
    check("requests and limits are set",
          all(k in res.get(s, {}) for s in ("requests", "limits") for k in ("cpu", "memory")))

    for what, ok, why in results:
        print(f"ok   {what}" if ok else f"FAIL {what}: {why}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
