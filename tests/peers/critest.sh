#!/usr/bin/env bash
# Runs the Kubernetes CRI validation suite (critest, kubernetes-sigs/cri-tools) against berthd or, as the
# oracle, containerd, in cri-peer.sh's private set-up:
#   tests/peers/critest.sh berthd|berthd-runc|containerd [critest args...]   e.g. --ginkgo.focus='Image'
# (berthd's runtime handler "runc": tests/peers/critest.sh berthd --runtime-handler=runc)
# Prints the summary and every failure; full logs in $OUT (default /tmp/critest-<daemon>).
set -euo pipefail
daemon=${1:?usage: critest.sh berthd|berthd-runc|containerd [critest args...]}
shift
if [ "$daemon" = --inside ]; then
  set +e
  "$CRI_PEER/bin/critest" --runtime-endpoint "unix://$CRI_SOCK" --image-endpoint "unix://$CRI_SOCK" \
    --ginkgo.no-color "$@" > "$OUT/critest.log" 2>&1
  rc=$?
  set -e
  grep -E "^(Ran|FAIL!|SUCCESS!|PASS|FAIL)|Passed|\[FAIL\]" "$OUT/critest.log" | tail -40
  echo "critest exit $rc; full log $OUT/critest.log, daemon log $OUT/daemon.log"
  exit $rc
fi
here=$(cd "$(dirname "$0")" && pwd)
export OUT=${OUT:-/tmp/critest-$daemon}
exec "$here/cri-peer.sh" "$daemon" "$here/critest.sh" --inside "$@"
