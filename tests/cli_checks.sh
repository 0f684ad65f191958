# Shared by the shell tests of the command line (sourced, not run): pass/fail counting and the
# one-line-error check. The sourcing script sets `bin` (the switchyard binary) and `tmp`.
passed=0; failed=0
ok()   { passed=$((passed + 1)); echo "ok    $1"; }
fail() { failed=$((failed + 1)); echo "FAIL  $1"; }

# expect_error NAME EXPECTED_SUBSTRING ARGS... : exit code 2 and exactly one stderr line with it
expect_error() {
  local name="$1" want="$2"; shift 2
  "$bin" "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  local lines; lines=$(wc -l <"$tmp/err")
  if [ "$rc" -eq 2 ] && [ "$lines" -eq 1 ] && grep -qF -- "$want" "$tmp/err"; then ok "$name"
  else fail "$name (rc=$rc, $lines stderr lines: $(head -c 300 "$tmp/err"))"; fi
}
