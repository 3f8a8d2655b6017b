#!/usr/bin/env python3
"""Playbook runner benchmark driver; see benches/runner.sh."""
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

ROOT = sys.argv[1]
ROUNDS = int(sys.argv[2])
PARTS = sys.argv[3] if len(sys.argv) > 3 else "all"
BIN = os.path.join(ROOT, "target/debug/server-manager")
PLAYBOOKS = os.path.join(ROOT, "playbooks")
TOKEN = "bench-token"
SUFFIX = uuid.uuid4().hex[:8]
WORK = tempfile.mkdtemp(prefix="smbench-")
procs = []
containers = []
# Clean up (finally: below) also when stopped by a signal.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
signal.signal(signal.SIGINT, signal.default_int_handler)


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


def start_sshd(i):
    d = os.path.join(WORK, f"sshd{i}")
    os.makedirs(d)
    for k in ("host_key", "client_key"):
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, k))
    shutil.copy(os.path.join(d, "client_key.pub"), os.path.join(d, "authorized_keys"))
    port = free_port()
    with open(os.path.join(d, "sshd_config"), "w") as f:
        f.write(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nUsePAM no\nStrictModes no\nMaxStartups 100\n"
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
        "dir": d,
    }


def api(method, path, body=None):
    req = urllib.request.Request(RUNNER + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {TOKEN}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def vars_for(i, target_dir):
    roles = [{"name": r, "config": f"[GLOBAL]\nrole = {r}\nhost = {i}\n", "image": IMAGE}
             for r in ("controller", "analytics")]
    return {"config_dir": f"{target_dir}/etc", "log_dir": f"{target_dir}/log",
            "data_dir": f"{target_dir}/lib", "container_prefix": f"smb-{SUFFIX}-{i}-",
            "registry": None, "roles": roles}


def request(playbook, t, v):
    return {"playbook": playbook,
            "target": {k: t[k] for k in ("host", "port", "user", "private_key", "known_hosts")},
            "vars": v, "timeout_seconds": 600}


def ts(text):
    """RFC 3339 with nanoseconds -> seconds since the epoch (float)."""
    from datetime import datetime
    main, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(main + "+00:00").timestamp() + float("0." + (frac or "0"))


def through_runner(req):
    t0 = time.monotonic()
    w0 = time.time()
    rid = api("POST", "/run_playbook", req)["id"]
    while True:
        s = api("GET", f"/playbook_status/{rid}")
        if s["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.02)
    w1 = time.time()
    if s["state"] != "succeeded":
        raise SystemExit(f"run failed: {s}")
    # Runner-side part: POST to dispatch, and end of run to the client seeing it.
    s["_before"] = ts(s["started"]) - w0
    s["_after"] = w1 - ts(s["finished"])
    return time.monotonic() - t0, s


def unsafe(v):
    if isinstance(v, str):
        return {"__ansible_unsafe": v}
    if isinstance(v, list):
        return [unsafe(x) for x in v]
    if isinstance(v, dict):
        return {k: unsafe(x) for k, x in v.items()}
    return v


def direct(t, v, playbook="provision.yml", extra=()):
    """The runner's ansible-playbook command, built the same way (src/runner/exec.rs)."""
    d = tempfile.mkdtemp(prefix="smr-")
    key = f"{d}/id"
    with open(os.open(key, os.O_CREAT | os.O_WRONLY, 0o600), "w") as f:
        f.write(t["private_key"])
    with open(f"{d}/known_hosts", "w") as f:
        f.write(t["known_hosts"])
    os.makedirs(f"{d}/cp")
    os.makedirs(f"{d}/tmp")
    ssh_args = (f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={d}/known_hosts "
                "-o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o IdentityAgent=none "
                "-o BatchMode=yes -o ConnectTimeout=10")
    inv = {"all": {"hosts": {"target": {
        "ansible_host": t["host"], "ansible_port": t["port"], "ansible_user": t["user"],
        "ansible_ssh_private_key_file": key, "ansible_ssh_common_args": ssh_args,
        "ansible_python_interpreter": "auto_silent"}}}}
    json.dump(inv, open(f"{d}/inventory.json", "w"))
    json.dump(unsafe({"sm": v}), open(f"{d}/vars.json", "w"))
    env = dict(os.environ)
    env.pop("ANSIBLE_CONFIG", None)
    env.update({
        "ANSIBLE_STDOUT_CALLBACK": "sm_events",
        "ANSIBLE_CALLBACK_PLUGINS": f"{PLAYBOOKS}/callback_plugins",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=30s",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": f"{d}/cp", "ANSIBLE_LOCAL_TEMP": f"{d}/tmp",
        "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_SSH_RETRIES": "0", "ANSIBLE_GATHERING": "explicit", "PYTHONUNBUFFERED": "1"})
    try:
        t0 = time.monotonic()
        r = subprocess.run(["ansible-playbook", "-i", f"{d}/inventory.json", "-e",
                            f"@{d}/vars.json", *extra, f"{PLAYBOOKS}/{playbook}"], cwd=d, env=env,
                           stdout=subprocess.PIPE, start_new_session=True)
        took = time.monotonic() - t0
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if r.returncode != 0:
        raise SystemExit(f"direct ansible-playbook failed: {r.stdout.decode()[-3000:]}")
    return took


try:
    # Registry with a 2-role test image.
    reg_port = free_port()
    reg_dir = os.path.join(WORK, "registry")
    os.makedirs(reg_dir)
    with open(f"{reg_dir}/config.yml", "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                f"    rootdirectory: {reg_dir}/data\nhttp:\n  addr: 127.0.0.1:{reg_port}\n")
    procs.append(subprocess.Popen(["docker-registry", "serve", f"{reg_dir}/config.yml"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_port(reg_port)
    IMAGE = f"127.0.0.1:{reg_port}/sm-bench-{SUFFIX}:1"
    rootfs = os.path.join(WORK, "rootfs")
    os.makedirs(f"{rootfs}/bin")
    os.makedirs(f"{rootfs}/etc/contrailctl")
    os.makedirs(f"{rootfs}/var/log")
    shutil.copy("/bin/busybox", f"{rootfs}/bin/busybox")
    for a in ("sh", "sleep", "cat"):
        os.symlink("busybox", f"{rootfs}/bin/{a}")
    sh("tar", "-C", rootfs, "-cf", f"{WORK}/rootfs.tar", ".")
    sh("docker", "import", "--change", "CMD /bin/sleep 3600", f"{WORK}/rootfs.tar", IMAGE)
    sh("docker", "push", IMAGE)

    hosts = [start_sshd(i) for i in range(8)]
    run_port = free_port()
    RUNNER = f"http://127.0.0.1:{run_port}"
    procs.append(subprocess.Popen(
        [BIN, "playbook-runner", "--listen", f"127.0.0.1:{run_port}", "--data-dir",
         f"{WORK}/runner", "--playbooks", PLAYBOOKS, "--max-concurrent", "4"],
        env=dict(os.environ, SM_RUNNER_TOKEN=TOKEN), stderr=subprocess.DEVNULL))
    wait_port(run_port)
    for i in range(8):
        containers += [f"smb-{SUFFIX}-{i}-controller", f"smb-{SUFFIX}-{i}-analytics"]

    # 1. Overhead per run (host 0, already provisioned: 0 changed tasks).
    t0 = hosts[0]
    v0 = vars_for(0, t0["dir"])
    through_runner(request("provision", t0, v0))

    if PARTS == "containers":
        # Cost of reading the containers' state: the same idempotent provision
        # with and without its last tasks (tags sm_containers,
        # sm_container_logs), alternated, and the inspect playbook alone.
        full, without, inspect = [], [], []
        for _ in range(ROUNDS):
            full.append(direct(t0, v0))
            without.append(direct(t0, v0, extra=("--skip-tags", "sm_containers,sm_container_logs")))
            inspect.append(direct(t0, v0, playbook="inspect.yml"))
        cost = [a - b for a, b in zip(full, without)]
        print(f"container state: {ROUNDS} idempotent provision runs (2 roles), alternated")
        print(f"  provision with the state read   : median {statistics.median(full):.2f}s")
        print(f"  provision without it            : median {statistics.median(without):.2f}s")
        print(f"  paired difference (cost per run): median {statistics.median(cost) * 1000:.0f} ms "
              f"(min {min(cost) * 1000:.0f}, max {max(cost) * 1000:.0f})")
        print(f"  inspect playbook alone          : median {statistics.median(inspect):.2f}s")
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end")
        raise SystemExit(0)
    via, plain, before, after = [], [], [], []
    for _ in range(ROUNDS):
        took, s = through_runner(request("provision", t0, v0))
        assert s["changed"] == 0, s
        via.append(took)
        before.append(s["_before"])
        after.append(s["_after"])
        plain.append(direct(t0, v0))
    overhead = [a - b for a, b in zip(via, plain)]
    print(f"overhead: {ROUNDS} idempotent provision runs (2 roles, 7 tasks)")
    print(f"  through runner: median {statistics.median(via):.2f}s  (all: {', '.join(f'{x:.2f}' for x in via)})")
    print(f"  direct        : median {statistics.median(plain):.2f}s  (all: {', '.join(f'{x:.2f}' for x in plain)})")
    print(f"  overhead      : median {statistics.median(overhead) * 1000:.0f} ms "
          f"(min {min(overhead) * 1000:.0f}, max {max(overhead) * 1000:.0f})")
    print(f"  POST -> ansible-playbook started: median {statistics.median(before) * 1000:.0f} ms; "
          f"run finished -> client sees it (20 ms polling): median {statistics.median(after) * 1000:.0f} ms")
    through_runner(request("deprovision", t0, v0))

    if PARTS == "overhead":
        raise SystemExit(0)

    # 2. 8 hosts from scratch: concurrency 4 vs one after another.
    def deprovision_all():
        ids = [api("POST", "/run_playbook", request("deprovision", h, vars_for(i, h["dir"])))["id"]
               for i, h in enumerate(hosts)]
        for rid in ids:
            while api("GET", f"/playbook_status/{rid}")["state"] in ("queued", "running"):
                time.sleep(0.1)

    t = time.monotonic()
    ids = [api("POST", "/run_playbook", request("provision", h, vars_for(i, h["dir"])))["id"]
           for i, h in enumerate(hosts)]
    for rid in ids:
        while True:
            s = api("GET", f"/playbook_status/{rid}")
            if s["state"] not in ("queued", "running"):
                break
            time.sleep(0.05)
        assert s["state"] == "succeeded", s
    parallel = time.monotonic() - t
    deprovision_all()
    t = time.monotonic()
    for i, h in enumerate(hosts):
        through_runner(request("provision", h, vars_for(i, h["dir"])))
    sequential = time.monotonic() - t
    deprovision_all()
    print("8 hosts x 2 roles, provisioned from scratch (image already on the engine)")
    print(f"  --max-concurrent 4, submitted at once: {parallel:.1f}s")
    print(f"  one after another                    : {sequential:.1f}s")
    print(f"  speed-up                             : {sequential / parallel:.2f}x")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end")
finally:
    for c in containers:
        subprocess.run(["docker", "rm", "-f", c], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["docker", "rmi", "-f", globals().get("IMAGE", "none")],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for p in procs:
        p.kill()
        p.wait()
    shutil.rmtree(WORK, ignore_errors=True)
