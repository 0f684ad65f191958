#!/usr/bin/env bash
# What the built binaries link and hold, checked without running any of their work:
#   - libstdc++ comes first among their shared libraries, and with every symbol bound at load
#     (LD_BIND_NOW) no std::filesystem symbol resolves into a torch library (LibTorch exports
#     its own copies; CMakeLists.txt says why that crashed tests on a GPU machine);
#   - a CUDA build holds sm_80 and sm_90 code and compute_90 PTX (for newer GPUs), and
#     `switchyard info` names them.
#   usage: binary_check_test.sh BIN_DIR PYTHON
set -uo pipefail
bin_dir="$1"; py="$2"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
bin="$bin_dir/switchyard"
source "$(dirname "$0")/cli_checks.sh"

for exe in switchyard switchyard_tests switchyard_mpi_tests; do
  first=$(readelf -d "$bin_dir/$exe" | awk '/NEEDED/ { gsub(/[\[\]]/, "", $NF); print $NF; exit }')
  if [ "$first" = "libstdc++.so.6" ]; then ok "$exe: libstdc++ is its first shared library"
  else fail "$exe: first shared library is $first, not libstdc++.so.6"; fi
done
# Every relocation of every loaded library bound at start-up, each binding logged.
run_bound() {  # NAME COMMAND...
  local name="$1"; shift
  LD_BIND_NOW=1 LD_DEBUG=bindings LD_DEBUG_OUTPUT="$tmp/$name" "$@" >/dev/null 2>&1
  cat "$tmp/$name".* >"$tmp/$name.log" 2>/dev/null
}
run_bound info "$bin" info
run_bound tests "$bin_dir/switchyard_tests" --gtest_list_tests
for name in info tests; do
  total=$(grep -c 'normal symbol `_ZN[K]*St10filesystem' "$tmp/$name.log")
  bad=$(grep 'normal symbol `_ZN[K]*St10filesystem' "$tmp/$name.log" | grep -c ' to [^ ]*/libtorch[^ ]*\.so')
  if [ "$total" -gt 0 ] && [ "$bad" -eq 0 ]; then
    ok "$name: all $total std::filesystem bindings resolve outside LibTorch"
  else
    fail "$name: $bad of $total std::filesystem bindings resolve into LibTorch ($(grep 'St10filesystem' "$tmp/$name.log" | grep libtorch | head -2))"
  fi
done

if "$bin" info | grep -q "CUDA compiled in *yes"; then
  # The CUDA code the executable embeds: its .nv_fatbin section's entries (kind 1 PTX, 2 ELF),
  # read with the fatbin header layout (magic 0xBA55ED50; per entry kind, header size, payload
  # size, and the arch at byte 28). cuobjdump would say the same; the toolkit here lacks it.
  objcopy -O binary --only-section=.nv_fatbin "$bin" "$tmp/fatbin"
  codes=$("$py" - "$tmp/fatbin" <<'PY'
import struct, sys
data, found, at = open(sys.argv[1], "rb").read(), set(), 0
while at + 16 <= len(data):
    magic, _, header, size = struct.unpack_from("<IHHQ", data, at)
    if magic != 0xBA55ED50:
        at += 8
        continue
    entry, end = at + header, at + header + size
    while entry < end:
        kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
        arch = struct.unpack_from("<I", data, entry + 28)[0]
        found.add(("ptx" if kind == 1 else "sm") + f"_{arch}")
        entry += entry_header + payload
    at = end
print(" ".join(sorted(found)))
PY
)
  if [[ " $codes " == *" sm_80 "* && " $codes " == *" sm_90 "* && " $codes " == *" ptx_90 "* ]]; then
    ok "CUDA code embedded: $codes"
  else fail "CUDA code embedded: '$codes' (expected sm_80, sm_90 and ptx_90)"; fi
  if "$bin" info | grep -q "sm 8.0;9.0+PTX"; then ok "info names the archs (8.0;9.0+PTX)"
  else fail "info: $("$bin" info | grep 'CUDA compiled in')"; fi
else
  echo "skip  CUDA code checks: a CPU-only build"
fi

echo "binary_check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
