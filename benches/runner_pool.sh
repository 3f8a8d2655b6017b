#!/usr/bin/env bash
# Runners that scale out (results in benches/RESULTS.md, "## Runner pool"):
# two real runner processes on loopback, 8 loopback sshd hosts whose every
# command waits LATENCY seconds (a run bound by waiting, not CPU), runs routed
# by rendezvous hashing as the operator's RunnerPool routes them:
#   1. throughput with two runners vs one, same --max-concurrent per runner;
#   2. no two runs of one host overlap (the host lock history on the host);
#   3. kill -9 of one runner mid-run: its unfinished runs finish on the other.
# Usage: benches/runner_pool.sh [ROUNDS] [LATENCY] [CONCURRENCY]  (default: 2 2 2)
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in ansible-playbook docker /usr/sbin/sshd ssh-keygen; do
  command -v "$tool" >/dev/null || { echo "FATAL: $tool not found (scripts/test.sh installs it)" >&2; exit 1; }
done
cargo build --quiet --bin server-manager
exec python3 benches/runner_pool_bench.py "$PWD" "${1:-2}" "${2:-2}" "${3:-2}"
