#!/usr/bin/env bash
# The C example (examples/c/translate.c, through the C API) translates exactly as taskmoe-translate.
#   usage: compare_cli.sh C_EXAMPLE TASKMOE_TRANSLATE TASKMOE_CONVERT CHECKPOINT_DIR TASK
set -euo pipefail
example="$1" cli="$2" convert="$3" checkpoint="$4" task="$5"
work=$(mktemp -d "${TMPDIR:-/tmp}/taskmoe-c-XXXXXX")
trap 'rm -rf "$work"' EXIT
"$convert" --checkpoint "$checkpoint" --task "$task" --output "$work/model.tmoe" --quiet
# More lines than one batch of the example (32), blank lines and non-ASCII text included.
{
  for i in $(seq 1 40); do
    case $((i % 5)) in
      0) echo "Could not open the file." ;;
      1) echo "Save the document before closing the window. ($i)" ;;
      2) echo "" ;;
      3) echo "Café, Straße, naïve — $i" ;;
      4) echo "The printer is not connected." ;;
    esac
  done
} >"$work/in.txt"
for beam in 1 4; do
  "$example" "$work/model.tmoe" "$beam" <"$work/in.txt" >"$work/c.txt" 2>"$work/c.err"
  "$cli" --model "$work/model.tmoe" --beam "$beam" --quiet <"$work/in.txt" >"$work/cli.txt"
  if ! cmp -s "$work/c.txt" "$work/cli.txt"; then
    echo "beam $beam: the C example and taskmoe-translate differ:"
    diff "$work/c.txt" "$work/cli.txt" | head -20
    exit 1
  fi
  [ "$(wc -l <"$work/c.txt")" -eq 40 ] || { echo "expected 40 lines"; exit 1; }
done
grep -q "task $task" "$work/c.err" || { echo "the example did not report the task"; cat "$work/c.err"; exit 1; }
# A missing model: exit status 1 and the library's message.
if "$example" "$work/missing.tmoe" </dev/null 2>"$work/err.txt"; then echo "missing model accepted"; exit 1; fi
grep -q "missing.tmoe" "$work/err.txt" || { cat "$work/err.txt"; exit 1; }
echo "compare_cli.sh: the C example equals taskmoe-translate (beam 1 and 4, 40 lines)"
