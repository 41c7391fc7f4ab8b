#!/bin/bash
# Crash safety of taskmoe-convert (ctest "convert_kill"): SIGKILL at random moments of a real
# conversion, many times. After every kill the output path holds nothing or a complete, valid
# file, and nothing else is left in the folder (the temporary is unnamed, or removed by the next
# run). Usage: convert_kill.sh CONVERT TRANSLATE CHECKPOINT_DIR [KILLS]
set -u
CONVERT=$1
TRANSLATE=$2
CK=$3
KILLS=${4:-30}
T=$(mktemp -d "${TMPDIR:-/tmp}/taskmoe-kill-XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
task=$("$CONVERT" --checkpoint "$CK" --list-tasks | awk '/^[^ ].* -> .*tag/ { print $1; exit }')
[ -n "$task" ] || { echo "FAIL: no task found in $CK"; exit 1; }
args=(--checkpoint "$CK" --task "$task" --quantization float32 --quiet)

mkdir "$T/ref" "$T/out"
t0=$(date +%s%N)
"$CONVERT" "${args[@]}" --output "$T/ref/m.tmoe" || { echo "FAIL: reference conversion"; exit 1; }
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
size=$(stat -c %s "$T/ref/m.tmoe")
valid() { "$TRANSLATE" --model "$1" --quiet </dev/null >/dev/null 2>&1; }  # loads, checks every CRC
valid "$T/ref/m.tmoe" || fail "the reference output does not load"

complete=0 absent=0
for ((i = 0; i < KILLS; i++)); do
  rm -f "$T/out/m.tmoe"
  "$CONVERT" "${args[@]}" --output "$T/out/m.tmoe" &
  pid=$!
  # A random moment within 1.2x the measured conversion time (some kills land after it ends).
  sleep "$(awk -v r=$RANDOM -v ms="$ms" 'BEGIN { printf "%.3f", r / 32768 * ms * 1.2 / 1000 }')"
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  if [ -e "$T/out/m.tmoe" ]; then
    complete=$((complete + 1))
    [ "$(stat -c %s "$T/out/m.tmoe")" = "$size" ] || fail "kill $i: partial file at the output path"
    valid "$T/out/m.tmoe" || fail "kill $i: the output path holds an invalid file"
  else
    absent=$((absent + 1))
  fi
  litter=$(ls -A "$T/out" | grep -v '^m\.tmoe$')
  [ -z "$litter" ] || fail "kill $i left: $litter"
done
# The next run after all that: a valid file and nothing else.
"$CONVERT" "${args[@]}" --output "$T/out/m.tmoe" --force || fail "conversion after the kills"
valid "$T/out/m.tmoe" || fail "output after the kills does not load"
[ "$(ls -A "$T/out")" = "m.tmoe" ] || fail "folder after the kills: $(ls -A "$T/out")"
echo "convert_kill: $KILLS kills of a ${ms} ms conversion: $absent left no file, $complete a complete one"
if [ "$fails" != 0 ]; then echo "$fails failure(s)"; exit 1; fi
echo "convert_kill: all passed"
