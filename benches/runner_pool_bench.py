#!/usr/bin/env python3
"""Runners that scale out; see benches/runner_pool.sh.

Real components only: two `server-manager playbook-runner` processes on
loopback, 8 sshd on loopback, ansible-playbook, the Docker engine (the
`inspect` playbook reads the role containers). Each sshd adds LATENCY seconds
before every command it runs (`ForceCommand`), so a run is bound by waiting
on its host, not by CPU: a slow network or a busy host, not a fast laptop.

Runs are routed as the operator's RunnerPool routes them: rendezvous hashing
of `host:port` over the runner names (here their URLs), SHA-256 of
`name NUL key`, first 8 bytes big-endian, highest wins.

1. throughput: ROUNDS runs per host (16 with 8 hosts, 2 rounds), all
   submitted at once, one runner vs two, at the same --max-concurrent;
2. overlap: every run's hold of its host's lock (the lock history the
   playbooks write on the host) lies inside the run and no two overlap;
3. kill: two runners, kill -9 one mid-run; the runs it had not finished go
   to the other (as RunnerPool does after --runner-gone-after); all finish,
   none overlaps a run the dead runner left behind.
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

ROOT = sys.argv[1]
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
LATENCY = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
CONCURRENCY = int(sys.argv[4]) if len(sys.argv) > 4 else 2
HOSTS = 8
BIN = os.path.join(ROOT, "target/debug/server-manager")
PLAYBOOKS = os.path.join(ROOT, "playbooks")
TOKEN = "bench-token"
SUFFIX = uuid.uuid4().hex[:8]
WORK = tempfile.mkdtemp(prefix="smpool-")
procs = []
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port):
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def sh(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def weight(name, key):
    d = hashlib.sha256(name.encode() + b"\0" + key.encode()).digest()
    return int.from_bytes(d[:8], "big")


def owner(names, key):
    return max(names, key=lambda n: (weight(n, key), n))


def start_sshd(i, port):
    d = os.path.join(WORK, f"sshd{i}")
    os.makedirs(d)
    for k in ("host_key", "client_key"):
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, k))
    shutil.copy(os.path.join(d, "client_key.pub"), os.path.join(d, "authorized_keys"))
    with open(os.path.join(d, "sshd_config"), "w") as f:
        f.write(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nUsePAM no\nStrictModes no\nMaxStartups 100\n"
            "MaxSessions 100\n"
            # Every command waits first: a host LATENCY seconds away.
            f"ForceCommand /bin/sh -c 'sleep {LATENCY}; exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"'\n"
        )
    os.makedirs("/run/sshd", exist_ok=True)
    procs.append(subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", f"{d}/sshd_config"],
                                  stderr=subprocess.DEVNULL))
    wait_port(port)
    kind, key = open(f"{d}/host_key.pub").read().split()[:2]
    return {
        "host": "127.0.0.1", "port": port, "user": "root",
        "private_key": open(f"{d}/client_key").read(),
        "known_hosts": f"[127.0.0.1]:{port} {kind} {key}\n",
        "prefix": f"smpool-{SUFFIX}-{i}-",
    }


class Runner:
    def __init__(self, name):
        self.dir = os.path.join(WORK, name)
        os.makedirs(self.dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [BIN, "playbook-runner", "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", self.dir, "--playbooks", PLAYBOOKS,
             "--max-concurrent", str(CONCURRENCY)],
            env=dict(os.environ, SM_RUNNER_TOKEN=TOKEN),
            stderr=open(os.path.join(self.dir, "stderr"), "w"))
        procs.append(self.proc)
        wait_port(self.port)

    def api(self, method, path, body=None):
        req = urllib.request.Request(
            self.url + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def kill9(self):
        self.proc.kill()
        self.proc.wait()


def request(host, key):
    return {
        "playbook": "inspect",
        "target": {k: host[k] for k in ("host", "port", "user", "private_key", "known_hosts")},
        "vars": {"container_prefix": host["prefix"], "roles": [{"name": "agent"}]},
        "idempotency_key": key,
        "timeout_seconds": 600,
    }


def history(prefix):
    path = f"/run/lock/server-manager.{prefix}.history"
    out = []
    try:
        lines = open(path).read().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        parts = line.split()
        if parts[0] == "acquired":
            out.append({"token": parts[2], "acquired": float(parts[1]), "released": None})
        else:
            assert out and out[-1]["token"] == parts[2] and out[-1]["released"] is None, line
            out[-1]["released"] = float(parts[1])
    for a, b in zip(out, out[1:]):
        if a["released"] is None:
            a["released"] = b["acquired"]
    return out


def check_overlap(hosts, statuses):
    """No two holds of one host overlap; every run held its host once, inside
    its own span. Returns the number of holds checked."""
    n = 0
    for h in hosts:
        held = history(h["prefix"])
        for a, b in zip(held, held[1:]):
            if a["released"] > b["acquired"]:
                raise SystemExit(f"OVERLAP on {h['prefix']}: {a} {b}")
        n += len(held)
    for s in statuses:
        if s["state"] != "succeeded":
            continue
        host = next(h for h in hosts if h["port"] == s["port"])
        mine = [x for x in history(host["prefix"]) if x["token"] == s["id"]]
        if len(mine) != 1:
            raise SystemExit(f"run {s['id']} held its host {len(mine)} times")
    return n


def run_all(runners, hosts, rounds, tag, kill_after=None):
    """Submits `rounds` runs per host, routed by rendezvous hashing; returns
    (wall seconds, final statuses, runs moved after a kill)."""
    names = [r.url for r in runners]
    by_name = {r.url: r for r in runners}
    pending = []  # (runner, id, host, key)
    t0 = time.monotonic()
    for rnd in range(rounds):
        for h in hosts:
            key = f"{tag}/{h['prefix']}/{rnd}"
            r = by_name[owner(names, f"{h['host']}:{h['port']}")]
            acc = r.api("POST", "/run_playbook", request(h, key))
            pending.append((r, acc["id"], h, key))
    done = {}
    moved = 0
    killed = None
    while pending:
        if kill_after is not None and killed is None and time.monotonic() - t0 > kill_after:
            killed = runners[0]
            killed.kill9()
            alive = [r.url for r in runners if r is not killed]
            # Its unfinished runs go to the others, as RunnerPool does once
            # the runner is gone.
            again = []
            for (r, rid, h, key) in pending:
                if r is killed:
                    nr = by_name[owner(alive, f"{h['host']}:{h['port']}")]
                    acc = nr.api("POST", "/run_playbook", request(h, key))
                    again.append((nr, acc["id"], h, key))
                    moved += 1
                else:
                    again.append((r, rid, h, key))
            pending = again
        rest = []
        for (r, rid, h, key) in pending:
            s = r.api("GET", f"/playbook_status/{rid}")
            if s["state"] in ("succeeded", "failed", "cancelled"):
                done[rid] = s
            else:
                rest.append((r, rid, h, key))
        pending = rest
        time.sleep(0.2)
    return time.monotonic() - t0, list(done.values()), moved


def main():
    if not os.path.exists(BIN):
        raise SystemExit(f"{BIN} missing: cargo build --bin server-manager")
    ra, rb = Runner("ra"), Runner("rb")
    names = [ra.url, rb.url]
    # 8 hosts, 4 served by each runner: an even split, so the ratio measures
    # the runners and not the luck of the hash (with 8 random hosts the
    # split is 4/4 only 27% of the time).
    hosts, count = [], {ra.url: 0, rb.url: 0}
    while len(hosts) < HOSTS:
        port = free_port()
        o = owner(names, f"127.0.0.1:{port}")
        if count[o] >= HOSTS // 2:
            continue
        count[o] += 1
        hosts.append(start_sshd(len(hosts), port))
    print(f"{HOSTS} hosts (latency {LATENCY}s per command), {ROUNDS} runs per host, "
          f"--max-concurrent {CONCURRENCY} per runner")

    # Warm-up: one run per host (page cache, sshd, the Docker engine).
    run_all([ra, rb], hosts, 1, f"warm-{SUFFIX}")

    one, s1, _ = run_all([ra], hosts, ROUNDS, f"one-{SUFFIX}")
    two, s2, _ = run_all([ra, rb], hosts, ROUNDS, f"two-{SUFFIX}")
    n = len(hosts) * ROUNDS
    ok1 = sum(s["state"] == "succeeded" for s in s1)
    ok2 = sum(s["state"] == "succeeded" for s in s2)
    print(f"one runner : {n} runs in {one:6.1f}s  ({n / one * 60:5.1f} runs/min, {ok1} succeeded)")
    print(f"two runners: {n} runs in {two:6.1f}s  ({n / two * 60:5.1f} runs/min, {ok2} succeeded)")
    print(f"throughput ratio two/one: {one / two:.2f}x")
    holds = check_overlap(hosts, s1 + s2)
    print(f"overlap check: {holds} host-lock holds on {len(hosts)} hosts, none overlapping")

    # Kill one runner mid-run.
    kill_at = max(3.0, LATENCY * 2)
    wall, s3, moved = run_all([ra, rb], hosts, ROUNDS, f"kill-{SUFFIX}", kill_after=kill_at)
    ok3 = sum(s["state"] == "succeeded" for s in s3)
    holds = check_overlap(hosts, s3)
    print(f"kill -9 of runner A after {kill_at:.0f}s: {moved} unfinished runs moved to B, "
          f"{ok3}/{len(s3)} finished runs succeeded in {wall:.1f}s; "
          f"{holds} lock holds, none overlapping")
    if ok1 != n or ok2 != n:
        raise SystemExit("some runs failed")
    if ok3 != len(s3):
        failed = [s for s in s3 if s["state"] != "succeeded"]
        raise SystemExit(f"runs failed after the kill: {json.dumps(failed)[:2000]}")


try:
    main()
finally:
    for p in procs:
        try:
            p.kill()
        except OSError:
            pass
    for i in range(HOSTS):
        for ext in ("lock", "holder", "history"):
            try:
                os.remove(f"/run/lock/server-manager.smpool-{SUFFIX}-{i}-.{ext}")
            except OSError:
                pass
    shutil.rmtree(WORK, ignore_errors=True)
