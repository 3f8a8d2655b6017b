#!/usr/bin/env bash
# Image push benchmark, run by hand (not part of the test suite); figures go to
# benches/RESULTS.md under "## Image push".
#
#   benches/push.sh [SIZE_MB] [LAYERS]     default: 600 MB in 6 random layers
#
# 1. direct push (server-manager push) vs docker load + tag + push, same tarball,
#    each into its own fresh registry (Debian docker-registry on loopback);
# 2. re-push time (nothing to upload);
# 3. peak RSS of server-manager push, 200 MB image vs 2 GB image;
# 4. gzip -1 throughput and ratio on real binaries (the compression choice).
# Everything lives in a temporary directory under /tmp, removed at the end.
#
#   benches/push.sh skopeo                 against Debian's skopeo (issue 13.4)
#
# The skopeo mode compares `server-manager push` with `skopeo copy
# docker-archive:IMAGE docker://R/...`, each into a fresh registry, ROUNDS
# rounds (default 3), medians: a gzip push of a 300 MB image of real binaries
# (4 layers) vs skopeo's default (gzip), and an uncompressed push of 600 MB in
# 6 random layers vs `skopeo copy --dest-decompress`; then a gzip re-push
# (bytes uploaded). BINS (default target/release/server-manager) may list
# several binaries (e.g. before/after builds), measured in the same rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=default
if [ "${1:-}" = skopeo ]; then MODE=skopeo; shift; fi
SIZE=${1:-600}
LAYERS=${2:-6}
WORK=$(mktemp -d /tmp/pushbench.XXXXXX)
TAGS=()
cleanup() {
  # start_registry runs in a command substitution (a subshell): pids go to files.
  for f in "$WORK"/*/pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  for t in "${TAGS[@]}"; do docker rmi -f "$t" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${BINS:-}" ]; then
  cargo build --release --bin server-manager >/dev/null 2>&1
fi
BIN=$PWD/target/release/server-manager

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l | xargs printf '%.2f'; }

start_registry() { # $1: name; prints host:port
  local dir=$WORK/$1 port
  mkdir -p "$dir"
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s/data\nhttp:\n  addr: 127.0.0.1:%s\n' "$dir" "$port" >"$dir/config.yml"
  docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break
    sleep 0.1
  done
  echo "127.0.0.1:$port"
}

push_direct() { # $1 tarball, $2 registry, $3 version; prints "wall_s rss_kb"
  /usr/bin/time -v -o "$WORK/time.txt" "$BIN" push "$1" --registry "$2" \
    --image-id pushbench --image-type controller --version "$3" --insecure >"$WORK/push.out"
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/time.txt" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
  echo "$wall $rss"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

if [ "$MODE" = skopeo ]; then
  ROUNDS=${ROUNDS:-3}
  read -r -a BIN_LIST <<<"${BINS:-$BIN}"
  GZ=$WORK/real.tar
  RAW=$WORK/random.tar
  python3 benches/push_make_image.py "${GZ_MB:-300}" 4 "$GZ" real >/dev/null
  python3 benches/push_make_image.py "${RAW_MB:-600}" 6 "$RAW" >/dev/null
  ls -l "$GZ" "$RAW"
  n=0
  timed() { # $1: result file; rest: command. Appends wall seconds.
    local out=$1 t0 t1
    shift
    t0=$(now)
    "$@" >"$WORK/last.out" 2>&1 || { cat "$WORK/last.out"; exit 1; }
    t1=$(now)
    echo "$(secs "$t0" "$t1")" >>"$out"
  }
  for round in $(seq "$ROUNDS"); do
    for mode in gzip none; do
      if [ "$mode" = gzip ]; then T=$GZ; SK=(); else T=$RAW; SK=(--dest-decompress); fi
      n=$((n + 1)); R=$(start_registry "s$n")
      timed "$WORK/skopeo-$mode" skopeo copy -q --dest-tls-verify=false "${SK[@]}" \
        "docker-archive:$T" "docker://$R/pushbench-controller:1"
      kill "$(cat "$WORK/s$n/pid")"; rm -rf "$WORK/s$n/data"
      for i in "${!BIN_LIST[@]}"; do
        n=$((n + 1)); R=$(start_registry "s$n")
        export XDG_CACHE_HOME=$WORK/cache-$n
        timed "$WORK/ours$i-$mode" "${BIN_LIST[$i]}" push "$T" --registry "$R" --image-id pushbench \
          --image-type controller --version 1 --insecure --compression "$mode"
        if [ "$mode" = gzip ] && [ "$round" = 1 ]; then
          "${BIN_LIST[$i]}" push "$T" --registry "$R" --image-id pushbench --image-type controller \
            --version 1 --insecure --compression gzip | sed "s|^|re-push, ${BIN_LIST[$i]}: |"
          "${BIN_LIST[$i]}" push "$T" --registry "$R" --image-id pushbench --image-type analytics \
            --version 1 --insecure --compression gzip | sed "s|^|other role, ${BIN_LIST[$i]}: |"
        fi
        kill "$(cat "$WORK/s$n/pid")"; rm -rf "$WORK/s$n/data"
      done
    done
  done
  for mode in gzip none; do
    S=$(median <"$WORK/skopeo-$mode")
    echo "--compression $mode: skopeo runs $(paste -sd' ' "$WORK/skopeo-$mode") -> median ${S}s"
    for i in "${!BIN_LIST[@]}"; do
      O=$(median <"$WORK/ours$i-$mode")
      echo "  ${BIN_LIST[$i]}: runs $(paste -sd' ' "$WORK/ours$i-$mode") -> median ${O}s, ours/skopeo $(echo "$O / $S" | bc -l | xargs printf '%.2f')"
    done
  done
  exit 0
fi

echo "== image: ${SIZE} MB in ${LAYERS} random layers + busybox base"
TAR=$WORK/image.tar
TAG=$(python3 benches/push_make_image.py "$SIZE" "$LAYERS" "$TAR")
TAGS+=("$TAG")
ls -l "$TAR"

echo "== direct push (server-manager push), fresh registry"
R1=$(start_registry r1)
read -r DIRECT RSS_MAIN < <(push_direct "$TAR" "$R1" 1)
cat "$WORK/push.out"
echo "direct push: ${DIRECT}s, peak RSS ${RSS_MAIN} kB"
read -r REPUSH _ < <(push_direct "$TAR" "$R1" 1)
grep uploaded "$WORK/push.out"
echo "re-push: ${REPUSH}s"

echo "== docker load + docker tag + docker push, fresh registry"
R2=$(start_registry r2)
TARGET=$R2/pushbench-controller:1
TAGS+=("$TARGET")
t0=$(now)
docker load -q -i "$TAR" >/dev/null
t1=$(now)
docker tag "$TAG" "$TARGET"
docker push -q "$TARGET" >/dev/null
t2=$(now)
LOAD=$(secs "$t0" "$t1")
DOCKER=$(secs "$t0" "$t2")
echo "docker: load ${LOAD}s, load+tag+push ${DOCKER}s"
echo "ratio docker / direct: $(echo "$DOCKER / $DIRECT" | bc -l | xargs printf '%.1f')x"
docker rmi -f "$TAG" "$TARGET" >/dev/null 2>&1 || true
rm -f "$TAR"

echo "== peak RSS: 200 MB vs 2 GB image"
for mb in 200 2000; do
  T=$WORK/rss-$mb.tar
  python3 benches/push_make_image.py "$mb" 8 "$T" >/dev/null
  R=$(start_registry "rss$mb")
  read -r W K < <(push_direct "$T" "$R" 1)
  echo "${mb} MB: ${W}s, peak RSS ${K} kB"
  kill "$(cat "$WORK/rss$mb/pid")" 2>/dev/null || true
  rm -rf "$T" "$WORK/rss$mb/data"
done

echo "== compression: none vs gzip on an image of real binaries (/usr/lib)"
REAL=$WORK/real-image.tar
python3 benches/push_make_image.py 400 4 "$REAL" real >/dev/null
ls -l "$REAL"
for c in none gzip; do
  R=$(start_registry "real-$c")
  t0=$(now)
  "$BIN" push "$REAL" --registry "$R" --image-id pushbench --image-type controller --version 1 --insecure --compression "$c" | grep uploaded
  t1=$(now)
  "$BIN" push "$REAL" --registry "$R" --image-id pushbench --image-type controller --version 1 --insecure --compression "$c" >/dev/null
  t2=$(now)
  echo "--compression $c: push $(secs "$t0" "$t1")s, re-push $(secs "$t1" "$t2")s"
  kill "$(cat "$WORK/real-$c/pid")" 2>/dev/null || true
  rm -rf "$WORK/real-$c/data"
done
rm -f "$REAL"

echo "== compression: gzip -1 on real binaries (/usr/lib)"
(tar -cf - /usr/lib 2>/dev/null || true) | head -c 400000000 >"$WORK/real.tar" || true
IN=$(stat -c %s "$WORK/real.tar")
t0=$(now)
OUT=$(gzip -1 -c "$WORK/real.tar" | wc -c)
t1=$(now)
G=$(secs "$t0" "$t1")
echo "gzip -1: $((IN / 1048576)) MB -> $((OUT / 1048576)) MB in ${G}s ($(echo "$IN / 1048576 / $G" | bc -l | xargs printf '%.0f') MB/s, one core)"
echo "direct push throughput: $(echo "$SIZE / $DIRECT" | bc -l | xargs printf '%.0f') MB/s"
