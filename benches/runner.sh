#!/usr/bin/env bash
# Playbook runner benchmark (results in benches/RESULTS.md, "## Playbook runner").
#
#  1. overhead per run: wall time of an idempotent provision run through the
#     runner (POST /run_playbook until the status is terminal, polled every
#     20 ms) minus the same ansible-playbook command (same inventory, vars,
#     environment) run directly; alternated, ROUNDS times each;
#  2. 8 hosts (8 sshd on loopback, 2 roles each) provisioned from scratch
#     through the runner at --max-concurrent 4, all submitted at once, vs
#     one after another.
#
# Real components only: sshd, docker-registry, the Docker engine, ansible.
#  3. (`containers` only) the cost of reading the role containers' state at the
#     end of a provision run: the same run with and without those tasks, and
#     the inspect playbook alone.
# Usage: benches/runner.sh [ROUNDS] [all|overhead|containers]   (default: 5 all)
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in ansible-playbook docker docker-registry /usr/sbin/sshd ssh-keygen busybox; do
  command -v "$tool" >/dev/null || { echo "FATAL: $tool not found (scripts/test.sh installs it)" >&2; exit 1; }
done
cargo build --quiet --bin server-manager
exec python3 benches/runner_bench.py "$PWD" "${1:-5}" "${2:-all}"
