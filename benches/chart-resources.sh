#!/usr/bin/env bash
# Peak memory of what the chart runs, for its `resources` (benches/RESULTS.md,
# "Chart resources"): runs the end-to-end test (the chart's operator under its
# RBAC, real ansible over SSH on loopback) and samples every 0.5 s the summed
# RSS of the ansible-playbook processes and of the operator process.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --test e2e_standalone --no-run >/dev/null 2>&1
cargo test --test e2e_standalone >/tmp/chart-resources-e2e.log 2>&1 &
test_pid=$!
peak_ans=0 peak_runs=0 peak_op=0
while kill -0 "$test_pid" 2>/dev/null; do
  ans=$(ps -eo rss,args | awk '/[a]nsible-playbook/ {s+=$1} END {print s+0}')
  runs=$(ps -eo args | grep -c '^/usr/bin/python3 /usr/bin/ansible-playbook' || true)
  op=$(ps -eo rss,args | awk '/server-manager operator/ && !/awk/ {s+=$1} END {print s+0}')
  (( ans > peak_ans )) && peak_ans=$ans
  (( runs > peak_runs )) && peak_runs=$runs
  (( op > peak_op )) && peak_op=$op
  sleep 0.5
done
wait "$test_pid" || { echo "the end-to-end test failed: /tmp/chart-resources-e2e.log" >&2; exit 1; }
echo "ansible-playbook processes: peak ${peak_ans} KiB (at most ${peak_runs} processes at once)"
echo "server-manager operator:    peak ${peak_op} KiB"
