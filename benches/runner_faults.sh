#!/usr/bin/env bash
# Overlap under faults (results in benches/RESULTS.md, "## Runner pool"):
# TRIALS rollouts over 4 loopback hosts (2 at a time) through two runners,
# each with a kill -9 of the operator, a runner or the API server at a random
# moment (then started again); checks that every Server converges, that no
# two runs of a host overlap (the host lock history on the host) and that no
# run is repeated after it had finished (the runners' run records).
# Usage: benches/runner_faults.sh [TRIALS] [SEED]   (default: 10, the time)
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in ansible-playbook docker docker-registry kubectl /usr/sbin/sshd ssh-keygen busybox; do
  command -v "$tool" >/dev/null || { echo "FATAL: $tool not found (scripts/test.sh installs it)" >&2; exit 1; }
done
cargo build --quiet --bin server-manager
exec python3 benches/runner_faults.py "$PWD" "${1:-10}" ${2:+"$2"}
