#!/usr/bin/env bash
# Walks one pod through crictl (kubernetes-sigs/cri-tools) against berthd or containerd in cri-peer.sh's
# private set-up, printing each command and its answer — the transcript an operator would see:
#   tests/peers/crictl-tour.sh berthd|berthd-runc|containerd
# pull, runp (bridge network, hostPort 18080 → 80), create, start, pods, ps, exec -it, port-forward,
# the pod IP, logs -f, stats, stop, rm, stopp, rmp. Exits non-zero at the first step that fails.
set -euo pipefail
daemon=${1:?usage: crictl-tour.sh berthd|berthd-runc|containerd}
if [ "$daemon" != --inside ]; then
  here=$(cd "$(dirname "$0")" && pwd)
  export OUT=${OUT:-/tmp/crictl-tour-$daemon}
  exec "$here/cri-peer.sh" "$daemon" "$here/crictl-tour.sh" --inside
fi
cat > "$CRI_WORK/crictl.yaml" <<YAML
runtime-endpoint: unix://$CRI_SOCK
image-endpoint: unix://$CRI_SOCK
timeout: 10
YAML
crictl() { "$CRI_PEER/bin/crictl" --config "$CRI_WORK/crictl.yaml" "$@"; }
step() { printf '\n$ crictl %s\n' "$*"; crictl "$@"; }
image=registry.k8s.io/e2e-test-images/busybox:1.29-2
mkdir -p "$CRI_WORK/tour/logs"
cat > "$CRI_WORK/tour/pod.json" <<JSON
{ "metadata": { "name": "tour", "namespace": "default", "uid": "tour-uid-1", "attempt": 0 },
  "hostname": "tour", "log_directory": "$CRI_WORK/tour/logs",
  "port_mappings": [ { "container_port": 80, "host_port": 18080 } ],
  "linux": { "cgroup_parent": "/kubepods/tour" } }
JSON
# A web server of one line per connection ("pong-N") and a ticker on stdout for logs -f.
cat > "$CRI_WORK/tour/ctr.json" <<JSON
{ "metadata": { "name": "web" }, "image": { "image": "$image" },
  "command": [ "sh", "-c",
    "(i=0; while true; i=\$((i+1)); do echo tick \$i; sleep 1; done) & n=0; while true; do n=\$((n+1)); echo pong-\$n | nc -l -p 80; done" ],
  "log_path": "web.log", "linux": {},
  "labels": { "io.kubernetes.pod.name": "tour", "io.kubernetes.pod.namespace": "default",
              "io.kubernetes.pod.uid": "tour-uid-1", "io.kubernetes.container.name": "web" } }
JSON
cd "$CRI_WORK/tour"
step pull "$image"
printf '\n$ crictl runp pod.json\n'; pod=$(crictl runp pod.json); echo "$pod"
printf '\n$ crictl create %s ctr.json pod.json\n' "$pod"; ctr=$(crictl create "$pod" ctr.json pod.json); echo "$ctr"
step start "$ctr"
step pods
step ps
# exec -it needs a terminal on crictl's side: script(1) gives it one.
printf '\n$ crictl exec -it %s sh -c "hostname; tty; id"\n' "$ctr"
script -qec "$CRI_PEER/bin/crictl --config $CRI_WORK/crictl.yaml exec -it $ctr sh -c 'hostname; tty; id'" /dev/null
read_port() { # host port → the line the pod's server answers
  local reply; exec 3<>"/dev/tcp/$1/$2"; read -r -t 5 reply <&3 || true; exec 3<&-; echo "$reply"; }
printf '\n$ crictl port-forward %s 28080:80 &; then read 127.0.0.1:28080\n' "$pod"
crictl port-forward "$pod" 28080:80 > port-forward.log 2>&1 & pf=$!
for _ in $(seq 50); do grep -q Forwarding port-forward.log 2>/dev/null && break; sleep 0.1; done
cat port-forward.log
echo "read: $(read_port 127.0.0.1 28080)"
kill "$pf"; wait "$pf" 2>/dev/null || true
ip=$(crictl inspectp -o go-template --template '{{.status.network.ip}}' "$pod")
printf '\n# the pod IP %s, port 80, and the published host port 18080 on the gateway\n' "$ip"
echo "read $ip:80: $(read_port "$ip" 80)"
gw=$(ip -4 -o addr show cni0 | awk '{print $4}' | cut -d/ -f1)
echo "read $gw:18080: $(read_port "$gw" 18080)"
printf '\n$ timeout 3 crictl logs -f %s\n' "$ctr"
timeout 3 "$CRI_PEER/bin/crictl" --config "$CRI_WORK/crictl.yaml" logs -f "$ctr" || true
# (without the screen clearing crictl stats starts with)
step stats | sed 's/\x1b\[[0-9;]*[HJ]//g'
step stop "$ctr"
step rm "$ctr"
step stopp "$pod"
step rmp "$pod"
step pods
step ps -a
