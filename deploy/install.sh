#!/usr/bin/env bash
# Installs berth system-wide:
#   /usr/local/bin/{berthd,berthctl,containerd-shim-berth-v2}
#   /etc/berth/config.toml (only if absent), /etc/systemd/system/berthd.service
# Usage: sudo deploy/install.sh [--no-build] [--bin-dir DIR] [--no-systemd]
#   By default builds in release mode first (cargo build --release).
#   --no-build (or BERTH_NO_BUILD=1) installs binaries already built, from
#   target/release, or from --bin-dir DIR (or BERTH_BIN_DIR), e.g.
#   target/debug or an unpacked release; no cargo needed.
#   DESTDIR=/some/dir stages the files under that directory (for packaging)
#   and leaves systemd alone.
set -euo pipefail
cd "$(dirname "$0")/.."
build=1
bin_dir="${BERTH_BIN_DIR:-}"
systemd=1
[ "${BERTH_NO_BUILD:-}" = 1 ] && build=0
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --bin-dir) [ $# -ge 2 ] || { echo "install.sh: --bin-dir needs a directory" >&2; exit 2; }
               bin_dir="$2"; build=0; shift ;;
    --no-systemd) systemd=0 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$bin_dir" ] && build=0
bin_dir="${bin_dir:-target/release}"
d="${DESTDIR:-}"
[ -n "$d" ] && systemd=0
[ -n "$d" ] || [ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
if [ "$build" = 1 ]; then
  cargo build --release --workspace --bins
fi
# berthd and berthctl are required; the shim too: berthd runs every task through it.
for b in berthd berthctl containerd-shim-berth-v2; do
  [ -x "$bin_dir/$b" ] || { echo "install.sh: $bin_dir/$b is missing: build first (cargo build --release --workspace --bins) or pass --bin-dir" >&2; exit 1; }
done
install -d "$d/usr/local/bin" "$d/etc/berth"
for b in berthd berthctl containerd-shim-berth-v2; do
  install -m 0755 "$bin_dir/$b" "$d/usr/local/bin/"
done
if [ ! -e "$d/etc/berth/config.toml" ]; then
  install -m 0644 deploy/config.toml "$d/etc/berth/config.toml"
fi
if [ -n "$d" ]; then
  install -d "$d/etc/systemd/system"
  install -m 0644 deploy/berthd.service "$d/etc/systemd/system/berthd.service"
  echo "berth staged under $d"
  exit 0
fi
if [ "$systemd" = 1 ] && [ -d /run/systemd/system ]; then
  install -m 0644 deploy/berthd.service /etc/systemd/system/berthd.service
  systemctl daemon-reload
  systemctl enable --now berthd.service
  echo "berthd installed and started (systemctl status berthd)"
else
  echo "berthd installed; start it with: /usr/local/bin/berthd"
fi
