#!/usr/bin/env bash
# Runs a command against a CRI runtime — berthd or, as the oracle, containerd — on this machine, offline and
# without touching the host's network:
#   tests/peers/cri-peer.sh berthd|berthd-runc|containerd COMMAND [ARGS...]
# critest.sh and crictl-tour.sh are its two commands. COMMAND runs in $CRI_PEER with CRI_SOCK (the daemon's
# socket), CRI_WORK (a scratch dir removed afterwards) and OUT set; its exit status is this script's.
# Needs CRI_PEER (default /var/tmp/cri-peer) as ../shared/peers/cri-tools builds it (bin/critest,
# bin/crictl, images/oci/list.tsv), docker-registry, skopeo, the CNI plugins in /usr/lib/cni, and for the
# oracle containerd. Everything runs inside a private network + mount namespace: a registry on
# 127.0.0.1:5000 holds critest's images and hosts.toml mirrors point registry.k8s.io, k8s.gcr.io
# and gcr.io at it. berthd also offers runtime handler "runc" (a RuntimeClass's pods through runc).
# Logs in $OUT (default /tmp/cri-peer-<daemon>).
set -euo pipefail
daemon=${1:?usage: cri-peer.sh berthd|berthd-runc|containerd COMMAND [ARGS...]}
shift
[ $# -gt 0 ] || { echo "usage: cri-peer.sh berthd|berthd-runc|containerd COMMAND [ARGS...]" >&2; exit 2; }
if [ -z "${CRI_PEER_INSIDE:-}" ]; then
  exec env CRI_PEER_INSIDE=1 unshare --net --mount --propagation private -- "$0" "$daemon" "$@"
fi
here=$(cd "$(dirname "$0")/../.." && pwd)
P=${CRI_PEER:-/var/tmp/cri-peer}
OUT=${OUT:-/tmp/cri-peer-$daemon}
rm -rf "$OUT"; mkdir -p "$OUT"
W=$(mktemp -d /tmp/critest-work.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # Mounts under the work dir die with this mount namespace; cgroups do not.
  for c in /sys/fs/cgroup/*/critest /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/*/k8s.io; do
    [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -rf "$W"
}
trap cleanup EXIT
# This namespace's own /sys (its interfaces), the host's cgroups kept.
mkdir -p "$W/cg"; mount --rbind /sys/fs/cgroup "$W/cg"; mount -t sysfs sysfs /sys
mount --move "$W/cg" /sys/fs/cgroup
ip link set lo up

# --- registry with critest's images
mkdir -p "$W/registry"
cat > "$W/registry/config.yml" <<EOF
version: 0.1
storage: { filesystem: { rootdirectory: $W/registry/data }, delete: { enabled: true } }
http: { addr: 127.0.0.1:5000 }
log: { level: error }
EOF
docker-registry serve "$W/registry/config.yml" > "$OUT/registry.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/5000) 2>/dev/null && break; sleep 0.1; done
while read -r layout ref; do
  skopeo copy --quiet --insecure-policy --dest-tls-verify=false "oci:$layout:latest" "docker://127.0.0.1:5000/$ref"
done < "$P/images/oci/list.tsv"
certs=$W/certs.d
for h in registry.k8s.io k8s.gcr.io gcr.io docker.io; do
  mkdir -p "$certs/$h"
  printf 'server = "https://%s"\n\n[host."http://127.0.0.1:5000"]\n  capabilities = ["pull", "resolve"]\n' "$h" > "$certs/$h/hosts.toml"
done
# --- CNI: a bridge network, as a cluster's CNI plugin installs it
mkdir -p "$W/net.d"
cat > "$W/net.d/10-critest.conflist" <<'EOF'
{ "cniVersion": "1.0.0", "name": "critest",
  "plugins": [
    { "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.99.0.0/16" }]], "routes": [{ "dst": "0.0.0.0/0" }] } },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "loopback" } ] }
EOF
sock=$W/run/daemon.sock
case $daemon in
berthd|berthd-runc)
  bin=${BERTHD:-$here/target/release/berthd}
  [ -x "$bin" ] || bin=$here/target/debug/berthd
  cat > "$W/berthd.toml" <<EOF
root = "$W/root"
state = "$W/run"
[grpc]
address = "$sock"
[log]
level = "${BERTHD_LOG_LEVEL:-info}"
[registry]
config_path = "$certs"
[network]
cni_bin_dirs = ["/usr/lib/cni"]
cni_conf_dir = "$W/net.d"
[cri]
sandbox_image = "registry.k8s.io/pause:3.9"
restrict_oom_score_adj = true
# berthd-runc: every pod through the shim's runc driver instead of the built-in runtime.
runtime_binary = "$( [ "$daemon" = berthd-runc ] && echo runc )"
# critest --runtime-handler=runc: pods of that handler (a RuntimeClass) through runc.
[cri.runtimes.runc]
runtime_binary = "runc"
EOF
  PATH=$(dirname "$bin"):$PATH "$bin" --config "$W/berthd.toml" > "$OUT/daemon.log" 2>&1 & pids+=($!)
  ;;
containerd)
  cat > "$W/containerd.toml" <<EOF
version = 2
root = "$W/root"
state = "$W/run/state"
[grpc]
  address = "$sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  # This machine's root lacks CAP_SYS_RESOURCE: oom_score_adj cannot go below
  # the current value (the pause container asks for -998).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$W/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$certs"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      BinaryName = "${RUNC_BINARY:-runc}"
EOF
  containerd --config "$W/containerd.toml" > "$OUT/daemon.log" 2>&1 & pids+=($!)
  ;;
*) echo "unknown daemon $daemon" >&2; exit 2 ;;
esac
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { echo "daemon did not start; see $OUT/daemon.log" >&2; tail -20 "$OUT/daemon.log" >&2; exit 1; }
cd "$P"
set +e
CRI_PEER=$P CRI_SOCK=$sock CRI_WORK=$W OUT=$OUT "$@"
rc=$?
exit $rc
