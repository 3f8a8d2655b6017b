#!/usr/bin/env python3
"""Overlap under faults; see benches/runner_faults.sh.

Real components: `server-manager standalone --no-operator` (the API server),
`server-manager operator` as its own process, two `server-manager
playbook-runner` processes, Debian's docker-registry, 4 sshd hosts on
loopback, ansible-playbook, the Docker engine.

Each trial changes the Cluster's parameters (a rollout over the 4 hosts, 2 at
a time), waits a random moment, `kill -9`s the operator, a runner or the API
server (in turn), starts it again a second later with the same arguments and
data, and waits until every Server is Ready with the new parameters on its
host. Then it checks, over all trials so far:
  - no overlap: on every host, no two holds of the host lock overlap
    (the lock history the playbooks write on the host);
  - no run repeated after it had finished: across both runners' run records,
    no run was started with the idempotency key of a run that had already
    succeeded.
"""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = sys.argv[1]
TRIALS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
SEED = int(sys.argv[3]) if len(sys.argv) > 3 else int(time.time())
BIN = os.path.join(ROOT, "target/debug/server-manager")
PLAYBOOKS = os.path.join(ROOT, "playbooks")
RUN = uuid.uuid4().hex[:8]
WORK = tempfile.mkdtemp(prefix="smfaults-")
HOSTS = [f"127.0.0.{91 + i}" for i in range(4)]
LEVELS = ["SYS_DEBUG", "SYS_INFO", "SYS_NOTICE"]
procs = {}
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
random.seed(SEED)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, host="127.0.0.1"):
    for _ in range(600):
        try:
            socket.create_connection((host, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {host}:{port}")


def sh(*args, **kw):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, **kw).stdout.decode()


class Proc:
    """A process we can kill -9 and start again with the same arguments."""

    def __init__(self, name, args, port=None, env=None):
        self.name, self.args, self.port, self.env = name, args, port, env
        self.log = open(os.path.join(WORK, f"{name}.log"), "a")
        self.start()

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=self.log,
                                     env=dict(os.environ, **(self.env or {})))
        if self.port:
            wait_port(self.port)

    def kill9(self):
        self.proc.kill()
        self.proc.wait()


def kubectl(*args, check=True):
    r = subprocess.run(["kubectl", *args], env=dict(os.environ, KUBECONFIG=KUBECONFIG),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if check and r.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {r.stderr.decode()}")
    return r.stdout.decode() if r.returncode == 0 else None


def apply(objects):
    path = os.path.join(WORK, f"apply-{uuid.uuid4().hex[:6]}.yaml")
    with open(path, "w") as f:
        # JSON documents are YAML documents.
        f.write("\n---\n".join(json.dumps(o) for o in objects))
    for _ in range(100):
        try:
            kubectl("apply", "-f", path)
            return
        except RuntimeError:
            time.sleep(0.5)
    kubectl("apply", "-f", path)


def start_sshd(i, address):
    d = os.path.join(WORK, f"sshd{i}")
    os.makedirs(d)
    for k in ("host_key", "client_key"):
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, k))
    shutil.copy(os.path.join(d, "client_key.pub"), os.path.join(d, "authorized_keys"))
    port = free_port()
    with open(os.path.join(d, "sshd_config"), "w") as f:
        f.write(
            f"Port {port}\nListenAddress {address}\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nUsePAM no\nStrictModes no\nMaxStartups 100\n"
        )
    os.makedirs("/run/sshd", exist_ok=True)
    procs[f"sshd{i}"] = Proc(f"sshd{i}", ["/usr/sbin/sshd", "-D", "-e", "-f", f"{d}/sshd_config"])
    wait_port(port, address)
    kind, key = open(f"{d}/host_key.pub").read().split()[:2]
    return {"address": address, "port": port, "dir": d,
            "key": open(f"{d}/client_key").read(),
            "known_hosts": f"[{address}]:{port} {kind} {key}\n",
            "prefix": f"smf-{RUN}-{i}-"}


def image_tarball():
    rootfs = os.path.join(WORK, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy(shutil.which("busybox"), os.path.join(rootfs, "bin/busybox"))
    for applet in ("sh", "sleep", "cat"):
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    tag = f"smfaults-base-{RUN}:1"
    tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "--change", 'CMD ["/bin/sleep", "3600"]', "-", tag],
                   stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
    tar.wait()
    path = os.path.join(WORK, "image.tar")
    sh("docker", "save", "-o", path, tag)
    sh("docker", "rmi", tag)
    return path


def lock_history(prefix):
    out = []
    try:
        lines = open(f"/run/lock/server-manager.{prefix}.history").read().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        p = line.split()
        if p[0] == "acquired":
            out.append([p[2], float(p[1]), None])
        else:
            assert out and out[-1][0] == p[2] and out[-1][2] is None, line
            out[-1][2] = float(p[1])
    for a, b in zip(out, out[1:]):
        if a[2] is None:
            a[2] = b[1]
    return out


def records(runner_dir):
    out = []
    d = os.path.join(runner_dir, "runs")
    for name in os.listdir(d) if os.path.isdir(d) else []:
        if name.endswith(".json"):
            try:
                out.append(json.load(open(os.path.join(d, name))))
            except ValueError:
                pass
    return out


def servers():
    out = kubectl("get", "servers", "-o", "json", check=False)
    return json.loads(out)["items"] if out else []


def converged(hosts, level):
    items = [s for s in servers() if s["metadata"]["name"] != "f-ext"]
    if len(items) != len(hosts):
        return False
    for s in items:
        conds = s.get("status", {}).get("conditions", [])
        if not any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
            return False
    for h in hosts:
        try:
            if f"log_level = {level}" not in open(os.path.join(h["dir"], "etc", "agent.conf")).read():
                return False
        except OSError:
            return False
    return True


def ts(t):
    from datetime import datetime, timezone
    base, _, frac = t.rstrip("Z").partition(".")
    return datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=timezone.utc).timestamp() + float("0." + (frac or "0"))


def check(hosts, runner_dirs):
    """(lock holds checked, runs checked, repeats, overlaps)."""
    overlaps, holds = [], 0
    for h in hosts:
        held = lock_history(h["prefix"])
        holds += len(held)
        for a, b in zip(held, held[1:]):
            if a[2] > b[1]:
                overlaps.append((h["prefix"], a, b))
    recs = [r for d in runner_dirs for r in records(d)]
    by_key = {}
    for r in recs:
        if r.get("idempotency_key"):
            by_key.setdefault(r["idempotency_key"], []).append(r)
    repeats = []
    for key, rs in by_key.items():
        for later in rs:
            for earlier in rs:
                if (earlier is not later and earlier["state"] == "succeeded"
                        and earlier.get("finished")
                        and ts(earlier["finished"]) <= ts(later["created"])):
                    repeats.append((key, earlier["id"], later["id"]))
    return holds, len(recs), repeats, overlaps


def main():
    global KUBECONFIG
    for tool in ("kubectl", "docker", "docker-registry", "ansible-playbook", "busybox"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (scripts/test.sh installs it)")
    if not os.path.exists(BIN):
        raise SystemExit(f"{BIN} missing: cargo build --bin server-manager")
    print(f"seed {SEED}, {TRIALS} trials, work dir {WORK}")
    # Registry.
    reg_port = free_port()
    with open(os.path.join(WORK, "registry.yml"), "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                f"    rootdirectory: {WORK}/registry\nhttp:\n  addr: 127.0.0.1:{reg_port}\n")
    procs["registry"] = Proc("registry", ["docker-registry", "serve", f"{WORK}/registry.yml"],
                             reg_port)
    registry = f"127.0.0.1:{reg_port}"
    tarball = image_tarball()
    token = os.path.join(WORK, "token")
    open(token, "w").write("faults-runner-token")
    runner_dirs, urls = [], []
    for name in ("runner-a", "runner-b"):
        port = free_port()
        d = os.path.join(WORK, name)
        runner_dirs.append(d)
        urls.append(f"http://127.0.0.1:{port}")
        procs[name] = Proc(name, [BIN, "playbook-runner", "--listen", f"127.0.0.1:{port}",
                                  "--data-dir", d, "--token-file", token,
                                  "--playbooks", PLAYBOOKS, "--max-concurrent", "4"], port)
    data = os.path.join(WORK, "data")
    os.makedirs(data)
    KUBECONFIG = os.path.join(data, "kubeconfig")
    api_port = free_port()
    procs["apiserver"] = Proc("apiserver", [
        BIN, "standalone", "--data-dir", data, "--listen", f"127.0.0.1:{api_port}",
        "--registry", registry, "--image-dir", WORK, "--no-operator",
        "--runner-url", urls[0], "--runner-token-file", token], api_port)
    for _ in range(300):
        if os.path.exists(KUBECONFIG) and kubectl("get", "crd", "servers.servermanager.contrail.io",
                                                  check=False):
            break
        time.sleep(0.2)
    procs["operator"] = Proc("operator", [
        BIN, "operator", "--registry", registry, "--registry-insecure",
        "--runner-url", ",".join(urls), "--runner-token-file", token,
        "--runner-gone-after", "5", "--max-backoff", "5", "--leader-elect", "false",
        "--playbooks", PLAYBOOKS, "--image-dir", WORK,
        "--health-listen", f"127.0.0.1:{free_port()}"], env={"KUBECONFIG": KUBECONFIG})

    hosts = [start_sshd(i, a) for i, a in enumerate(HOSTS)]
    objects = [
        {"apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Cluster",
         "metadata": {"name": "f"},
         "spec": {"registry": {"address": registry, "insecure": True},
                  "images": {"agent": "f-agent"},
                  "rollout": {"minReadySeconds": 1, "maxUnavailable": {"default": 2}},
                  "parameters": {"GLOBAL": {"log_level": LEVELS[0]}}}},
        {"apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Image",
         "metadata": {"name": "f-agent"},
         "spec": {"imageId": "faults", "imageType": "agent", "version": "1",
                  "source": {"path": tarball}}},
        {"apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Server",
         "metadata": {"name": "f-ext"},
         "spec": {"clusterRef": {"name": "f"}, "host": "127.0.0.90", "provisioning": "External",
                  "roles": ["controller"]}},
    ]
    for i, h in enumerate(hosts):
        objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"f{i}-ssh"},
                        "type": "Opaque",
                        "stringData": {"ssh-privatekey": h["key"], "known_hosts": h["known_hosts"]}})
        objects.append({"apiVersion": "servermanager.contrail.io/v1alpha1", "kind": "Server",
                        "metadata": {"name": f"f-{i}"},
                        "spec": {"clusterRef": {"name": "f"}, "host": h["address"],
                                 "roles": ["agent"],
                                 "ssh": {"port": h["port"], "secretRef": {"name": f"f{i}-ssh"}},
                                 "layout": {"configDir": os.path.join(h["dir"], "etc"),
                                            "logDir": os.path.join(h["dir"], "log"),
                                            "dataDir": os.path.join(h["dir"], "data"),
                                            "containerPrefix": h["prefix"]}}})
    apply(objects)
    t0 = time.monotonic()
    while not converged(hosts, LEVELS[0]):
        if time.monotonic() - t0 > 600:
            raise SystemExit("the initial provisioning did not converge")
        time.sleep(1)
    print(f"initial provisioning of {len(hosts)} hosts: {time.monotonic() - t0:.0f}s")

    victims = ["operator", "runner-a", "apiserver", "runner-b"]
    results = []
    for trial in range(1, TRIALS + 1):
        level = LEVELS[trial % len(LEVELS)]
        apply([dict(objects[0], spec=dict(objects[0]["spec"],
                                          parameters={"GLOBAL": {"log_level": level}}))])
        t0 = time.monotonic()
        delay = random.uniform(0.5, 10.0)
        victim = victims[(trial - 1) % len(victims)]
        time.sleep(delay)
        procs[victim].kill9()
        time.sleep(1.0)
        procs[victim].start()
        while not converged(hosts, level):
            if time.monotonic() - t0 > 900:
                raise SystemExit(f"trial {trial}: did not converge; logs in {WORK}")
            time.sleep(1)
        took = time.monotonic() - t0
        holds, runs, repeats, overlaps = check(hosts, runner_dirs)
        lost = sum(1 for d in runner_dirs for r in records(d) if r.get("lost"))
        results.append((trial, victim, delay, took, holds, runs, len(repeats), len(overlaps), lost))
        print(f"trial {trial:2}: kill -9 {victim:9} after {delay:4.1f}s -> converged in "
              f"{took:5.1f}s; {runs} run records ({lost} lost), {holds} lock holds, "
              f"{len(overlaps)} overlaps, {len(repeats)} repeated finished runs", flush=True)
        if overlaps or repeats:
            print(json.dumps({"overlaps": overlaps, "repeats": repeats}, indent=1))
            raise SystemExit(f"trial {trial} failed; logs in {WORK}")
    print(f"{TRIALS}/{TRIALS} trials converged; no overlap, no finished run repeated")


try:
    main()
finally:
    for p in procs.values():
        try:
            p.kill9()
        except OSError:
            pass
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"name=^smf-{RUN}-"],
                         stdout=subprocess.PIPE).stdout.decode().split()
    if out:
        subprocess.run(["docker", "rm", "-f", *out], stdout=subprocess.DEVNULL)
    for i in range(len(HOSTS)):
        for ext in ("lock", "holder", "history"):
            try:
                os.remove(f"/run/lock/server-manager.smf-{RUN}-{i}-.{ext}")
            except OSError:
                pass
    if os.environ.get("KEEP_WORK") != "1":
        shutil.rmtree(WORK, ignore_errors=True)
