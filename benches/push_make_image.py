#!/usr/bin/env python3
"""Writes a `docker save` tarball of a runnable image for the push benchmark:
a busybox base layer plus LAYERS layers of random (incompressible) content,
TOTAL_MB in all; with `real`, the layers hold files copied from /usr/lib instead
(typical binaries, compressible about 2x). No Docker needed to build it.

usage: benches/push_make_image.py TOTAL_MB LAYERS OUT.tar [random|real]
"""
import hashlib, io, json, os, shutil, sys, tarfile, tempfile

total_mb, layers, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
content = sys.argv[4] if len(sys.argv) > 4 else "random"
busybox = shutil.which("busybox") or "/bin/busybox"
work = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(out)))


def layer_tar(path, add):
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as t:
        add(t)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def add_base(t):
    for d in ["bin", "tmp"]:
        i = tarfile.TarInfo(d); i.type = tarfile.DIRTYPE; i.mode = 0o755; t.addfile(i)
    t.add(busybox, "bin/busybox")
    for a in ["sh", "cat", "ls", "echo", "sha256sum"]:
        i = tarfile.TarInfo("bin/" + a); i.type = tarfile.SYMTYPE; i.linkname = "busybox"; t.addfile(i)


def add_random(n, size):
    def add(t):
        src = os.path.join(work, f"random{n}")
        with open(src, "wb") as f:
            left = size
            while left:
                k = min(left, 1 << 20)
                f.write(os.urandom(k))
                left -= k
        t.add(src, f"data{n}.bin")
        os.remove(src)
    return add


def real_files():
    for root, _, files in os.walk("/usr/lib"):
        for f in sorted(files):
            p = os.path.join(root, f)
            if os.path.isfile(p) and not os.path.islink(p):
                yield p


REAL = real_files()


def add_real(n, size):
    def add(t):
        done = 0
        while done < size:
            try:
                p = next(REAL)
            except StopIteration:
                break
            try:
                t.add(p, f"layer{n}" + p)
                done += os.path.getsize(p)
            except OSError:
                pass
    return add


names, diff_ids = [], []
per_layer = total_mb * (1 << 20) // layers
for n in range(layers + 1):
    d = os.path.join(work, f"layer{n:02d}")
    os.makedirs(d)
    path = os.path.join(d, "layer.tar")
    diff_ids.append(layer_tar(path, add_base if n == 0 else (add_real if content == "real" else add_random)(n, per_layer)))
    names.append(f"layer{n:02d}/layer.tar")
config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Cmd": ["/bin/sh", "-c", "ls -l /"]},
    "rootfs": {"type": "layers", "diff_ids": diff_ids},
}).encode()
cfg_name = hashlib.sha256(config).hexdigest() + ".json"
with open(os.path.join(work, cfg_name), "wb") as f:
    f.write(config)
tag = "pushbench:" + os.path.basename(out).replace(".tar", "")
with open(os.path.join(work, "manifest.json"), "w") as f:
    json.dump([{"Config": cfg_name, "RepoTags": [tag], "Layers": names}], f)
with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as t:
    for name in sorted(os.listdir(work)):
        t.add(os.path.join(work, name), name)
shutil.rmtree(work)
print(tag)
