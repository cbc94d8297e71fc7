#!/usr/bin/env bash
# Removes the namespace (and with it the TUN device), stopping anything still in it.
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() {
  cat <<USAGE
usage: $0 [-n NAMESPACE]

Stops every process in NAMESPACE (default $SYNACK_NS) and deletes it with its devices.
USAGE
}

while getopts "n:h" opt; do
  case $opt in
    n) SYNACK_NS=$OPTARG ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
need_root

ns_exists "$SYNACK_NS" || exit 0
pids=$(ip netns pids "$SYNACK_NS" || true)
if [ -n "$pids" ]; then
  # SIGTERM first: synack finishes its capture on it.
  kill -TERM $pids 2>/dev/null || true
  wait_for 5 bash -c "[ -z \"\$(ip netns pids $SYNACK_NS)\" ]" || kill -KILL $(ip netns pids "$SYNACK_NS") 2>/dev/null || true
fi
ip netns del "$SYNACK_NS"
rm -rf "/etc/netns/$SYNACK_NS"
