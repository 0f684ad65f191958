#!/usr/bin/env bash
# Fails when a C++ or CUDA source differs from what clang-format makes of it under the checked-in
# .clang-format, and lists the files. Fix with:
#   clang-format -i $(git ls-files '*.cpp' '*.h' '*.cu' '*.cuh')
# clang-format comes from Debian (launch/setup.sh installs it); its version is printed, since
# another major version may format differently.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
if ! command -v clang-format >/dev/null; then
  echo "clang-format not found (launch/setup.sh installs it)"
  # A machine that cannot install it (the GPU machine: no network) says so; the sources'
  # format does not depend on the machine, and CI checks it.
  [ "${SWITCHYARD_FORMAT_OPTIONAL:-0}" = 1 ] && { echo "skipped: SWITCHYARD_FORMAT_OPTIONAL=1"; exit 77; }
  exit 1
fi
clang-format --version
mapfile -t files < <(find bench common configs data eval launch models parallel plan routers tests trainer \
                       -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) | sort)
bad=()
for f in "${files[@]}"; do
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if ((${#bad[@]})); then
  echo "${#bad[@]} of ${#files[@]} files are not clang-formatted:"
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "all ${#files[@]} C++/CUDA files are clang-formatted"
