#!/usr/bin/env bash
# Builds berth in release mode and installs it system-wide:
#   /usr/local/bin/{berthd,berthctl,containerd-shim-berth-v2}
#   /etc/berth/config.toml (only if absent), /etc/systemd/system/berthd.service
# Usage: sudo deploy/install.sh [--no-systemd]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
cargo build --release --workspace --bins
install -d /usr/local/bin /etc/berth
for b in berthd berthctl containerd-shim-berth-v2; do
  if [ -x "target/release/$b" ]; then install -m 0755 "target/release/$b" /usr/local/bin/; fi
done
if [ ! -e /etc/berth/config.toml ]; then
  install -m 0644 deploy/config.toml /etc/berth/config.toml
fi
if [ "${1:-}" != "--no-systemd" ] && [ -d /run/systemd/system ]; then
  install -m 0644 deploy/berthd.service /etc/systemd/system/berthd.service
  systemctl daemon-reload
  systemctl enable --now berthd.service
  echo "berthd installed and started (systemctl status berthd)"
else
  echo "berthd installed; start it with: /usr/local/bin/berthd"
fi
