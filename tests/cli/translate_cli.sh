#!/bin/bash
# CLI test of taskmoe-translate (registered in examples/CMakeLists.txt and examples/meson.build as
# "translate_cli"): converts a fixture with taskmoe-convert, then checks output line counts,
# streaming, n-best format, exit codes and one-line errors.
#   usage: translate_cli.sh TRANSLATE CONVERT MINIMAL FIXTURES_DIR
set -u
BIN=$1
CONVERT=$2
MINIMAL=$3
FIX=$4
T=$(mktemp -d "${TMPDIR:-/tmp}/taskmoe-translate-cli-XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# expect CODE PATTERN -- ARGS...: run with empty stdin, check exit code and that stderr is one
# line matching PATTERN.
expect() {
  local code=$1 pattern=$2
  shift 3
  "$BIN" "$@" </dev/null >"$T/stdout" 2>"$T/err"
  local rc=$?
  local lines
  lines=$(wc -l <"$T/err")
  if [ "$rc" != "$code" ] || ! grep -q -- "$pattern" "$T/err" || [ "$lines" != 1 ]; then
    echo "FAIL: $* -> rc $rc (want $code), stderr ($lines lines):"; cat "$T/err"
    echo "      want /$pattern/"
    fails=$((fails + 1))
  fi
}

"$CONVERT" --checkpoint "$FIX/task_target" --task en-de --output "$T/en-de.tmoe" --quiet || { echo "FAIL: convert"; exit 1; }
"$CONVERT" --checkpoint "$FIX/task_target" --task en-de --output "$T/en-de.f32.tmoe" --quantization float32 --quiet || { echo "FAIL: convert"; exit 1; }
M="$T/en-de.tmoe"

# --help, --version.
"$BIN" --help | grep -q "usage: taskmoe-translate" || fail "--help"
"$BIN" --version | grep -q "^taskmoe-translate [0-9]" || fail "--version"

# Usage errors: exit 2.
expect 2 "give --model FILE.tmoe or --checkpoint DIR --task NAME" --
expect 2 "unknown argument '--bogus'" -- --model "$M" --bogus
expect 2 "--beam needs an integer >= 1, got '0'" -- --model "$M" --beam 0
expect 2 "--n-best must not exceed --beam" -- --model "$M" --beam 2 --n-best 3
expect 2 "--checkpoint needs --task NAME" -- --checkpoint "$FIX/task_target"
expect 2 "--vocabulary-map and --no-vocabulary-map are mutually exclusive" -- --model "$M" --vocabulary-map "$T/m.txt" --no-vocabulary-map
expect 2 "needs a value" -- --model
expect 2 "sampling (--sampling-topk) needs --beam 1" -- --model "$M" --beam 4 --sampling-topk 5
expect 2 "--int8-weights: int8 weights must be auto, full or narrow, got '7'" -- --model "$M" --int8-weights 7

# Bad model files: exit 1, one line naming the file.
expect 1 "$T/missing.tmoe: cannot open" -- --model "$T/missing.tmoe"
head -c 1000 "$M" >"$T/truncated.tmoe"
expect 1 "error: $T/truncated.tmoe" -- --model "$T/truncated.tmoe"
cp "$M" "$T/corrupt.tmoe"
size=$(stat -c %s "$M")
printf '\x55\xaa\x55\xaa' | dd of="$T/corrupt.tmoe" bs=1 seek=$((size - 3000)) count=4 conv=notrunc status=none
expect 1 "error: $T/corrupt.tmoe" -- --model "$T/corrupt.tmoe"
expect 1 "holds task 'en-de', but task 'fr-en' was requested" -- --model "$M" --task fr-en
expect 1 "unknown task 'xx-yy'" -- --checkpoint "$FIX/task_target" --task xx-yy
expect 1 "missing.txt: cannot open" -- --model "$M" -i "$T/missing.txt"

# One output line per input line, empty lines stay empty, last line without a newline counts.
for i in $(seq 1 70); do
  case $((i % 7)) in
    0) echo "" ;;
    3) echo "   " ;;
    *) echo "The cat number $i sits on the mat." ;;
  esac
done >"$T/in.txt"
printf 'no newline at the end' >>"$T/in.txt"
"$BIN" --model "$M" --beam 2 --batch-size 16 -i "$T/in.txt" -o "$T/out.txt" 2>"$T/err" || { fail "translate file"; cat "$T/err"; }
[ "$(wc -l <"$T/out.txt")" = 71 ] || fail "71 lines in, $(wc -l <"$T/out.txt") out"
[ -s "$T/err" ] && { fail "stderr not empty without --verbose:"; cat "$T/err"; }
for n in 7 14 70; do [ -z "$(sed -n "${n}p" "$T/out.txt")" ] || fail "line $n is empty in the input, not in the output"; done
[ -n "$(sed -n 1p "$T/out.txt")" ] || fail "line 1 translated to nothing"
# stdin and -i agree; batch size and threads do not change the result (deterministic greedy/beam).
"$BIN" --model "$M" --beam 2 --batch-size 5 --threads 2 <"$T/in.txt" >"$T/out2.txt" 2>/dev/null || fail "stdin"
cmp -s "$T/out.txt" "$T/out2.txt" || fail "--batch-size 5 --threads 2 on stdin differs from a file with --batch-size 16"
# --int8-weights: auto translates as full or as narrow (whichever this CPU's kernel calls for).
"$BIN" --model "$M" --beam 2 --int8-weights full <"$T/in.txt" >"$T/full.txt" 2>/dev/null || fail "--int8-weights full"
"$BIN" --model "$M" --beam 2 --int8-weights narrow <"$T/in.txt" >"$T/narrow.txt" 2>/dev/null || fail "--int8-weights narrow"
[ "$(wc -l <"$T/narrow.txt")" = 71 ] || fail "--int8-weights narrow: 71 lines in, $(wc -l <"$T/narrow.txt") out"
cmp -s "$T/out.txt" "$T/full.txt" || cmp -s "$T/out.txt" "$T/narrow.txt" || fail "--int8-weights auto matches neither full nor narrow"
# The full checkpoint and the float32 extraction translate alike.
"$BIN" --checkpoint "$FIX/task_target" --task en-de --beam 2 <"$T/in.txt" >"$T/ck.txt" 2>/dev/null || fail "--checkpoint"
"$BIN" --model "$T/en-de.f32.tmoe" --beam 2 <"$T/in.txt" >"$T/f32.txt" 2>/dev/null || fail "float32 model"
cmp -s "$T/ck.txt" "$T/f32.txt" || fail "full checkpoint and float32 extraction differ"

# n-best: 'i ||| text ||| score', up to N per input line, indices 0-based.
"$BIN" --model "$M" --beam 3 --n-best 3 <"$T/in.txt" >"$T/nbest.txt" 2>/dev/null || fail "--n-best"
grep -qv '^[0-9]* ||| .* ||| -\?[0-9.]*$' "$T/nbest.txt" && fail "n-best line format: $(grep -v '^[0-9]* ||| .* ||| -\?[0-9.]*$' "$T/nbest.txt" | head -1)"
[ "$(cut -d' ' -f1 "$T/nbest.txt" | sort -un | wc -l)" = 71 ] || fail "n-best does not cover 71 lines"
[ "$(grep -c '^0 |||' "$T/nbest.txt")" = 3 ] || fail "n-best: not 3 hypotheses for line 0"
[ "$(tail -1 "$T/nbest.txt" | cut -d' ' -f1)" = 70 ] || fail "n-best: last index is not 70"

# Invalid UTF-8: one message naming the line, an empty output line, translation continues, exit 1.
printf 'Hello.\n\xff\xfe broken\nWorld.\n' >"$T/bad.txt"
"$BIN" --model "$M" --beam 1 -i "$T/bad.txt" >"$T/out.txt" 2>"$T/err"
rc=$?
[ "$rc" = 1 ] || fail "invalid UTF-8: exit $rc, want 1"
grep -q "line 2: invalid UTF-8 at byte 0" "$T/err" || { fail "invalid UTF-8 message:"; cat "$T/err"; }
[ "$(wc -l <"$T/out.txt")" = 3 ] && [ -z "$(sed -n 2p "$T/out.txt")" ] && [ -n "$(sed -n 3p "$T/out.txt")" ] ||
  fail "invalid UTF-8: want 3 lines, the second empty"

# Hostile lines (docs/runtime.md, "Hostile input"): one output line per input line, always.
# Lines: ok, NUL, controls, blank, mixed scripts, emoji, RTL, CRLF, 100,000 tokens, a 1 MB line,
# invalid UTF-8, a 3 MB line (over --max-line-bytes 2 MB), and a last line without a newline.
/usr/bin/python3 - "$T/hostile.txt" <<'PY'
import sys
lines = [b"Hello.", b"nul\x00byte", b"\x01\x1b[31mred\x07", b" \t ", "Кириллица 漢字 ελληνικά".encode(),
         "emoji 😀👩‍👩‍👧🇩🇪".encode(), "עברית مرحبا \u202e".encode(), b"crlf\r", b"a " * 100000, b"x" * (1 << 20),
         b"bad \xff", b"y" * (3 << 20)]
open(sys.argv[1], "wb").write(b"\n".join(lines) + b"\nno final newline")
PY
"$BIN" --model "$M" --beam 1 --max-length 8 --max-line-bytes 2097152 -i "$T/hostile.txt" >"$T/out.txt" 2>"$T/err"
rc=$?
[ "$rc" = 1 ] || fail "hostile: exit $rc, want 1 (two rejected lines)"
[ "$(wc -l <"$T/out.txt")" = 13 ] || fail "hostile: $(wc -l <"$T/out.txt") output lines, want 13"
grep -q "line 9: 100000 pieces, translating the first" "$T/err" || { fail "hostile: no truncation warning for line 9"; cat "$T/err"; }
grep -q "line 10: .* pieces, translating the first" "$T/err" || fail "hostile: no truncation warning for line 10"
grep -q "line 11: invalid UTF-8 at byte 4" "$T/err" || fail "hostile: line 11 not rejected"
grep -q "line 12: longer than --max-line-bytes 2097152" "$T/err" || fail "hostile: line 12 not rejected"
grep -q "2 line(s) were rejected" "$T/err" || fail "hostile: summary"
[ -z "$(sed -n 4p "$T/out.txt")" ] && [ -z "$(sed -n 11p "$T/out.txt")" ] && [ -z "$(sed -n 12p "$T/out.txt")" ] ||
  fail "hostile: blank and rejected lines must give empty lines"
[ -n "$(sed -n 1p "$T/out.txt")" ] && [ -n "$(sed -n 13p "$T/out.txt")" ] || fail "hostile: first/last line not translated"
# --no-truncate: the over-long lines become errors instead.
"$BIN" --model "$M" --beam 1 --max-length 8 --max-input-length 50 --no-truncate -i "$T/hostile.txt" >"$T/out.txt" 2>"$T/err"
[ "$(wc -l <"$T/out.txt")" = 13 ] || fail "--no-truncate: output not aligned"
grep -q "line 9: more pieces than --max-input-length 50" "$T/err" || { fail "--no-truncate message:"; cat "$T/err"; }
grep -q "4 line(s) were rejected" "$T/err" || fail "--no-truncate: want 4 rejected lines"
# A million lines through a pipe: every line answered, memory flat (peak RSS within 16 MB of a
# 1,000-line run). Under ASan the freed-memory quarantine (256 MB) would grow RSS by itself: cap it.
rss() { ASAN_OPTIONS="${ASAN_OPTIONS:-}:quarantine_size_mb=4" /usr/bin/python3 -c '
import resource, subprocess, sys
n = int(sys.argv[1])
p = subprocess.Popen(sys.argv[2:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
import threading
def feed():
    chunk = b"".join(b"Hello world.\n" if i % 2000 == 0 else b"\n" for i in range(10000))
    for _ in range(n // 10000): p.stdin.write(chunk)
    p.stdin.write(b"".join(b"Hello world.\n" if i % 2000 == 0 else b"\n" for i in range(n % 10000)))
    p.stdin.close()
threading.Thread(target=feed).start()
lines = sum(buf.count(b"\n") for buf in iter(lambda: p.stdout.read(1 << 16), b""))
p.wait()
print(lines, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' "$@"; }
read -r small_lines small_kb < <(rss 1000 "$BIN" --model "$M" --beam 1 --max-length 8)
read -r big_lines big_kb < <(rss 1000000 "$BIN" --model "$M" --beam 1 --max-length 8)
[ "$small_lines" = 1000 ] && [ "$big_lines" = 1000000 ] || fail "pipe: $small_lines / $big_lines lines out, want 1000 / 1000000"
echo "translate_cli: 1,000 lines: peak RSS $small_kb KB; 1,000,000 lines: $big_kb KB"
[ "$big_kb" -le $((small_kb + 16384)) ] || fail "pipe: peak RSS $big_kb KB for 1M lines vs $small_kb KB for 1,000"

# Streaming: the answer to the first line arrives while stdin is still open.
coproc TR { "$BIN" --model "$M" --beam 1 --batch-size 64 2>/dev/null; }
# Copies: bash unsets TR and TR_PID as soon as the coprocess exits.
tr_pid=$TR_PID tr_out=${TR[0]} tr_in=${TR[1]}
echo "The first line." >&"$tr_in"
if read -r -t 30 answer <&"$tr_out"; then
  echo "The second line." >&"$tr_in"
  read -r -t 30 answer <&"$tr_out" || fail "streaming: no answer to the second line before EOF"
else
  fail "streaming: no answer to the first line before EOF"
fi
exec {tr_in}>&-
wait "$tr_pid" || fail "streaming: exit status $?"

# --verbose summary.
"$BIN" --model "$M" --beam 1 --verbose <"$T/in.txt" >/dev/null 2>"$T/err" || fail "--verbose"
grep -q "71 sentences, [0-9]* target tokens, .* tokens/s" "$T/err" || { fail "--verbose summary:"; cat "$T/err"; }

# The minimal example.
[ "$("$MINIMAL" "$M" "Hello." "World." | wc -l)" = 2 ] || fail "minimal example"

if [ "$fails" != 0 ]; then
  echo "$fails failure(s)"
  exit 1
fi
echo "translate_cli: all checks passed"
