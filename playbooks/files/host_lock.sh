# The host lock of the server-manager playbooks (see tasks/host_lock.yml).
# Run on the target as `sh -c "<this file>" sh MODE DIR NAME TOKEN [WAIT]`:
#
#   acquire DIR NAME TOKEN WAIT  waits up to WAIT seconds for an exclusive
#                                flock(2) on DIR/NAME.lock, then leaves a
#                                watcher process holding it and returns.
#   release DIR NAME TOKEN       ends the watcher of TOKEN (the lock is free
#                                when this returns); fails when TOKEN no
#                                longer holds the lock.
#
# The watcher holds the lock for as long as the SSH connection the run's
# tasks go through (the first `sshd` ancestor of this shell; Ansible keeps one
# connection per host for the whole play) is alive, unless released first. So
# the lock is never broken while its run can still act on the host, and the
# kernel frees it as soon as the holder is provably gone: connection closed,
# process killed, host rebooted (the lock directory is a tmpfs).
#
# DIR/NAME.holder names the holder ("TOKEN WATCHER_PID CONNECTION_PID
# ACQUIRED"); DIR/NAME.history gets one line per acquisition and release
# ("acquired|released EPOCH_SECONDS TOKEN [why]"), written while the lock is
# held, so the history is the order in which runs held the host.
set -eu
mode=$1 dir=$2 name=$3 token=$4
lock="$dir/$name.lock" holder="$dir/$name.holder" history="$dir/$name.history"

stamp() { date +%s.%N; }
start_time() { awk '{ print $22 }' "/proc/$1/stat" 2>/dev/null || true; }

case "$mode" in
acquire)
  wait=$5
  conn=
  pid=$$
  while [ "$pid" -gt 1 ]; do
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || break
    case "$comm" in sshd | sshd-session) conn=$pid; break ;; esac
    pid=$(awk '/^PPid:/ { print $2 }' "/proc/$pid/status")
  done
  if [ -z "$conn" ]; then
    echo "the host lock needs the run to reach the host over SSH (no sshd process above this task)" >&2
    exit 2
  fi
  conn_start=$(start_time "$conn")
  mkdir -p "$dir"
  exec 9>>"$lock"
  if ! flock -x -w "$wait" 9; then
    echo "the host is locked by another run after ${wait}s of waiting: $(cat "$holder" 2>/dev/null || echo unknown)" >&2
    exit 75
  fi
  # Keep the history short: it is read to check that runs never overlapped.
  if [ -f "$history" ] && [ "$(wc -l <"$history")" -gt 2000 ]; then
    tail -n 1000 "$history" >"$history.tmp" && mv "$history.tmp" "$history"
  fi
  acquired=$(stamp)
  echo "acquired $acquired $token" >>"$history"
  # The watcher inherits descriptor 9, and with it the lock.
  setsid sh -c '
    history=$1 holder=$2 token=$3 conn=$4 conn_start=$5 acquired=$6
    released() {
      echo "released $(date +%s.%N) $token $1" >>"$history"
      rm -f "$holder"
      exit 0
    }
    trap "released by-request" TERM
    echo "$token $$ $conn $acquired" >"$holder"
    while [ "$(awk "{ print \$22 }" "/proc/$conn/stat" 2>/dev/null)" = "$conn_start" ]; do
      sleep 1 &
      wait $! || true
    done
    released connection-closed
  ' sh "$history" "$holder" "$token" "$conn" "$conn_start" "$acquired" </dev/null >/dev/null 2>&1 &
  exec 9>&-
  i=0
  until read -r held _ 2>/dev/null <"$holder" && [ "$held" = "$token" ]; do
    i=$((i + 1))
    if [ "$i" -gt 200 ]; then
      echo "the host lock watcher did not start" >&2
      exit 1
    fi
    sleep 0.05
  done
  echo "$token"
  ;;
release)
  read -r held watcher _ 2>/dev/null <"$holder" || held=
  if [ "$held" != "$token" ]; then
    echo "the host lock $lock is no longer held by this run (holder: ${held:-none})" >&2
    exit 1
  fi
  kill -TERM "$watcher" 2>/dev/null || true
  i=0
  while kill -0 "$watcher" 2>/dev/null && [ "$i" -lt 100 ]; do
    sleep 0.05
    i=$((i + 1))
  done
  if kill -0 "$watcher" 2>/dev/null; then
    echo "the watcher $watcher of the host lock $lock did not end" >&2
    exit 1
  fi
  echo "released $lock"
  ;;
*)
  echo "usage: sh -c SCRIPT sh acquire|release DIR NAME TOKEN [WAIT]" >&2
  exit 2
  ;;
esac
