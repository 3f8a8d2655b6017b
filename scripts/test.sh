#!/usr/bin/env bash
# The whole test suite, as README.md gives it and .ci/run calls it.
# Installs what the tests need (Debian packages), checks formatting and lints,
# then runs every test against the real components. Fails loudly, never skips.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker-registry ansible python3-docker python3-venv openssh-server busybox-static openssl lua5.1 lua-cjson)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

for tool in cargo docker kubectl docker-registry ansible-playbook /usr/sbin/sshd busybox openssl python3 lua5.1 curl; do
  command -v "$tool" >/dev/null || { echo "FATAL: $tool not found" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "FATAL: the Docker engine is not running" >&2; exit 1; }

# Python packages the tests drive, installed the same way for each: Helm's own
# Go code for tests/helm_sdk.rs (PyPI helm-python-sdk) and the official
# Kubernetes client for tests/apiserver_python.rs (PyPI kubernetes).
# They go into a virtual environment (target/venv; stock Debian refuses a
# global pip install, PEP 668), first on PATH for the tests.
venv="$PWD/target/venv"
if [ ! -x "$venv/bin/python3" ]; then
  echo "==> python3 -m venv $venv"
  python3 -m venv --system-site-packages "$venv" \
    || { echo "FATAL: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
fi
export PATH="$venv/bin:$PATH"
for spec in helm-python-sdk:helm_python kubernetes:kubernetes; do
  pkg=${spec%%:*} module=${spec##*:}
  if ! "$venv/bin/python3" -c "import $module" 2>/dev/null; then
    echo "==> pip install $pkg (into $venv)"
    "$venv/bin/python3" -m pip install -q "$pkg"
  fi
  "$venv/bin/python3" -c "import $module" || { echo "FATAL: $pkg could not be installed" >&2; exit 1; }
done

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "==> cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --locked
echo "==> cargo test"
# Benches are built by clippy above and run by hand (benches/RESULTS.md).
cargo test --lib --bins --tests --locked -- --test-threads="${TEST_THREADS:-4}"
