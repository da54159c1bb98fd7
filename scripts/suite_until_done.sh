#!/usr/bin/env bash
# The whole test suite, carried on past a test that kills the process: for gpu_check.sh, where
# one segfault must not hide every test after it.
#
#   scripts/suite_until_done.sh OUT_DIR [PYTEST_ARGS...]      (default arguments: tests/)
#
# Runs pytest -v into OUT_DIR/suite.log. When the process dies inside a test (a
# signal, or "Fatal Python error"), that test's id goes to OUT_DIR/crashed.txt and pytest runs
# again with every crashed test deselected (at most 3 times). The last line printed is the final
# pytest summary plus the crashes. Exit status: 0 only if nothing failed and nothing crashed.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="$1"; shift
PY="${PYTHON:-python3}"
(( $# )) || set -- tests/
: > "$OUT_DIR/crashed.txt"
: > "$OUT_DIR/suite.log"
deselect=()
rc=0
for attempt in 1 2 3 4; do
  part="$OUT_DIR/suite_part$attempt.log"
  "$PY" -X faulthandler -m pytest -v -ra -p no:cacheprovider "${deselect[@]}" "$@" \
    > "$part" 2>&1
  rc=$?
  cat "$part" >> "$OUT_DIR/suite.log"
  # pytest -v prints a test's id before running it: the last id printed, with no outcome after
  # it, is the one that was running when the process died.
  if (( rc < 128 )) && ! grep -q "Fatal Python error" "$part"; then break; fi
  node="$(grep -oE '^[^ ]+\.py::[^ ]+' "$part" | tail -n 1)"
  [ -z "$node" ] && break
  echo "$node" >> "$OUT_DIR/crashed.txt"
  deselect+=(--deselect "$node")
  (( attempt == 4 )) && break
done
crashes=$(wc -l < "$OUT_DIR/crashed.txt")
summary="$(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$OUT_DIR/suite.log" | tail -n 1 | tr -d '=')"
echo "${summary:-no pytest summary}; crashed: $crashes"
(( crashes == 0 && rc == 0 ))
