#!/usr/bin/env bash
# Installs the Debian packages miras builds with, unless they are already installed.
set -euo pipefail

packages=(
  build-essential cmake
  libeigen3-dev libboost-dev nlohmann-json3-dev
  libgtest-dev libbenchmark-dev libcli11-dev libfmt-dev
  gnuplot-nox
  slurm-wlm munge
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present" >&2
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
