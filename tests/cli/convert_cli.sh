#!/bin/bash
# CLI test of taskmoe-convert (registered in tools/CMakeLists.txt as ctest "convert_cli"):
# exit codes, one-line messages on stderr, atomicity. Usage: convert_cli.sh BINARY FIXTURES_DIR
set -u
BIN=$1
FIX=$2
T=$(mktemp -d "${TMPDIR:-/tmp}/taskmoe-cli-XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0

# expect CODE PATTERN -- ARGS...: run, check exit code, that stderr is one line matching PATTERN.
expect() {
  local code=$1 pattern=$2
  shift 3
  "$BIN" "$@" >"$T/stdout" 2>"$T/err"
  local rc=$?
  local lines
  lines=$(wc -l <"$T/err")
  if [ "$rc" != "$code" ] || ! grep -q -- "$pattern" "$T/err" || [ "$lines" != 1 ]; then
    echo "FAIL: $* -> rc $rc (want $code), stderr ($lines lines):"; cat "$T/err"
    echo "      want /$pattern/"
    fails=$((fails + 1))
  fi
}

# Usage errors: exit 2.
expect 2 "checkpoint DIR is required" -- --list-tasks
expect 2 "nothing to do" -- --checkpoint "$FIX/task_target"
expect 2 "unknown argument '--bogus'" -- --checkpoint "$FIX/task_target" --bogus
expect 2 "unknown quantization 'int4'" -- --checkpoint "$FIX/task_target" --task de-en --output "$T/x.tmoe" --quantization int4
expect 2 "several --task need --output-dir" -- --checkpoint "$FIX/task_target" --task de-en --task en-de --output "$T/x.tmoe"
expect 2 "--all-tasks needs --output-dir" -- --checkpoint "$FIX/task_target" --all-tasks --output "$T/x.tmoe"
expect 2 "give --output FILE or --output-dir DIR" -- --checkpoint "$FIX/task_target" --task de-en
expect 2 "mutually exclusive" -- --checkpoint "$FIX/task_target" --task de-en --all-tasks --output-dir "$T"
expect 2 "needs a value" -- --checkpoint
expect 2 "--embeddings applies to --quantization int8 only" -- --checkpoint "$FIX/task_target" --task de-en --output "$T/x.tmoe" --quantization float32 --float32-embeddings
expect 2 "--embeddings applies to --quantization int8 only" -- --checkpoint "$FIX/task_target" --task de-en --output "$T/x.tmoe" --quantization float16 --embeddings int8
expect 2 "unknown embedding type 'int4' (expected float16, int8 or float32)" -- --checkpoint "$FIX/task_target" --task de-en --output "$T/x.tmoe" --embeddings int4
expect 2 "--embeddings given twice" -- --checkpoint "$FIX/task_target" --task de-en --output "$T/x.tmoe" --embeddings int8 --float32-embeddings
expect 2 "--vocabulary-map needs exactly one --task" -- --checkpoint "$FIX/task_target" --all-tasks --output-dir "$T" --vocabulary-map "$T/m.txt"
expect 2 "--vocabulary-map and --vocabulary-maps are mutually exclusive" -- --checkpoint "$FIX/task_target" --task de-en --output "$T/x.tmoe" --vocabulary-map "$T/m.txt" --vocabulary-maps "$T"
expect 2 "--list-tasks writes no files" -- --checkpoint "$FIX/task_target" --list-tasks --vocabulary-maps "$T"

# Bad input: exit 1, one line naming the problem.
expect 1 "config.json is missing" -- --checkpoint "$T/nowhere" --list-tasks
mkdir "$T/badjson"; cp "$FIX/task_target/"* "$T/badjson/"; echo '{"format": ' >"$T/badjson/config.json"
expect 1 "config.json: not valid JSON" -- --checkpoint "$T/badjson" --list-tasks
mkdir "$T/badst"; cp "$FIX/task_target/"* "$T/badst/"
# Header length larger than the file: a bad offset.
printf '\xff\xff\xff\x00\x00\x00\x00\x00' | dd of="$T/badst/model.safetensors" bs=1 count=8 conv=notrunc status=none
expect 1 "model.safetensors: header size" -- --checkpoint "$T/badst" --list-tasks
mkdir "$T/nospm"; cp "$FIX/task_target/"* "$T/nospm/"; rm "$T/nospm/sentencepiece.model"
expect 1 "sentencepiece.model is missing" -- --checkpoint "$T/nospm" --list-tasks
mkdir "$T/shape"; cp "$FIX/task_target/"* "$T/shape/"
sed -i 's/"d_ff": 48/"d_ff": 40/' "$T/shape/config.json"
expect 1 "has shape \[48, 32\], expected \[40, 32\]" -- --checkpoint "$T/shape" --list-tasks
expect 1 "unknown task 'xx-yy' (checkpoint has: en-de, de-en, en-fr, fr-en)" -- --checkpoint "$FIX/task_target" --task xx-yy --output "$T/x.tmoe"
expect 1 "output folder '$T/missing' does not exist" -- --checkpoint "$FIX/task_target" --task de-en --output "$T/missing/x.tmoe"
expect 1 "output folder does not exist" -- --checkpoint "$FIX/task_target" --all-tasks --output-dir "$T/missing"

# Success, then refusal to overwrite without --force, then --force.
mkdir "$T/out"
"$BIN" --checkpoint "$FIX/task_target" --task de-en --output "$T/out/de-en.tmoe" --quiet 2>"$T/err" || { echo "FAIL: convert"; cat "$T/err"; fails=$((fails + 1)); }
[ -s "$T/err" ] && { echo "FAIL: --quiet printed:"; cat "$T/err"; fails=$((fails + 1)); }
before=$(md5sum <"$T/out/de-en.tmoe")
expect 1 "file exists (use --force to replace it)" -- --checkpoint "$FIX/task_target" --task de-en --output "$T/out/de-en.tmoe" --quantization float32
[ "$(md5sum <"$T/out/de-en.tmoe")" == "$before" ] || { echo "FAIL: file changed without --force"; fails=$((fails + 1)); }
"$BIN" --checkpoint "$FIX/task_target" --task de-en --output "$T/out/de-en.tmoe" --quantization float32 --force 2>/dev/null || { echo "FAIL: --force"; fails=$((fails + 1)); }
[ "$(md5sum <"$T/out/de-en.tmoe")" != "$before" ] || { echo "FAIL: --force did not replace"; fails=$((fails + 1)); }
# float16 embeddings by default: the file sits between --embeddings int8 and --float32-embeddings.
"$BIN" --checkpoint "$FIX/task_target" --task de-en --output "$T/out/emb32.tmoe" --float32-embeddings --quiet 2>/dev/null || { echo "FAIL: --float32-embeddings"; fails=$((fails + 1)); }
"$BIN" --checkpoint "$FIX/task_target" --task de-en --output "$T/out/emb16.tmoe" --quiet 2>/dev/null || { echo "FAIL: int8 convert"; fails=$((fails + 1)); }
"$BIN" --checkpoint "$FIX/task_target" --task de-en --output "$T/out/emb8.tmoe" --embeddings i8 --quiet 2>/dev/null || { echo "FAIL: --embeddings i8"; fails=$((fails + 1)); }
[ "$(stat -c %s "$T/out/emb32.tmoe")" -gt "$(stat -c %s "$T/out/emb16.tmoe")" ] || { echo "FAIL: --float32-embeddings file not larger"; fails=$((fails + 1)); }
[ "$(stat -c %s "$T/out/emb16.tmoe")" -gt "$(stat -c %s "$T/out/emb8.tmoe")" ] || { echo "FAIL: --embeddings int8 file not smaller"; fails=$((fails + 1)); }
mkdir "$T/all"
"$BIN" --checkpoint "$FIX/token_task" --all-tasks --output-dir "$T/all" 2>"$T/err" || { echo "FAIL: --all-tasks"; cat "$T/err"; fails=$((fails + 1)); }
[ "$(ls "$T/all" | wc -l)" == 4 ] || { echo "FAIL: --all-tasks wrote: $(ls "$T/all")"; fails=$((fails + 1)); }
grep -q "tmp-" <(ls "$T/all" "$T/out") && { echo "FAIL: temporary file left"; fails=$((fails + 1)); }
# No progress bar when stderr is not a terminal.
grep -q "\[#" "$T/err" && { echo "FAIL: progress bar on a non-terminal"; fails=$((fails + 1)); }

# Vocabulary maps: a bad one fails before anything is written; a good one is embedded byte for
# byte; --vocabulary-maps embeds DIR/<task>.vmap.txt where it exists and says which tasks got none.
mkdir "$T/maps" "$T/mapout"
printf 'no tab\n' >"$T/maps/de-en.vmap.txt"
expect 1 "de-en.vmap.txt: line 1: no tab" -- --checkpoint "$FIX/task_target" --task en-de --task de-en --output-dir "$T/mapout" --vocabulary-maps "$T/maps" --quiet
printf '\tzzz_unknown\n' >"$T/maps/de-en.vmap.txt"
expect 1 "holds no piece of the checkpoint's vocabulary" -- --checkpoint "$FIX/task_target" --task de-en --output "$T/mapout/x.tmoe" --vocabulary-map "$T/maps/de-en.vmap.txt"
expect 1 "cannot open vocabulary map" -- --checkpoint "$FIX/task_target" --task de-en --output "$T/mapout/x.tmoe" --vocabulary-map "$T/maps/none.txt"
expect 1 "not a directory (--vocabulary-maps)" -- --checkpoint "$FIX/task_target" --task de-en --output-dir "$T/mapout" --vocabulary-maps "$T/maps/none"
[ -z "$(ls -A "$T/mapout")" ] || { echo "FAIL: a bad map left: $(ls -A "$T/mapout")"; fails=$((fails + 1)); }
# A map of pieces the fixture's vocabulary has (its first ids), from the tokenizer's own listing.
/usr/bin/python3 - "$FIX/task_target/sentencepiece.model" "$T/maps/de-en.vmap.txt" <<'PY'
import sys
import sentencepiece
sp = sentencepiece.SentencePieceProcessor(model_file=sys.argv[1])
open(sys.argv[2], "w", encoding="utf-8").write("\t" + " ".join(sp.id_to_piece(i) for i in range(4, 40)) + "\n")
PY
"$BIN" --checkpoint "$FIX/task_target" --task en-de --task de-en --output-dir "$T/mapout" --vocabulary-maps "$T/maps" 2>"$T/err" || { echo "FAIL: --vocabulary-maps"; cat "$T/err"; fails=$((fails + 1)); }
grep -q "no $T/maps/en-de.vmap.txt: en-de gets no vocabulary map" "$T/err" || { echo "FAIL: no note for en-de:"; cat "$T/err"; fails=$((fails + 1)); }
grep -q "de-en.tmoe: int8, .* tensors (vocabulary map embedded)" "$T/err" || { echo "FAIL: de-en summary:"; cat "$T/err"; fails=$((fails + 1)); }
/usr/bin/python3 - "$T/mapout" "$T/maps/de-en.vmap.txt" <<'PY' || { echo "FAIL: embedded map"; fails=$((fails + 1)); }
import json, struct, sys
def tensors(path):
    b = open(path, "rb").read()
    meta_off, meta_size, table_off, table_size = struct.unpack_from("<QQQQ", b, 16)
    data_off = struct.unpack_from("<Q", b, 48)[0]
    out, p, end = {}, table_off, table_off + table_size
    while p < end:
        n = struct.unpack_from("<H", b, p)[0]; name = b[p + 2:p + 2 + n].decode(); p += 2 + n
        dt, nd = b[p], b[p + 1]; p += 2 + 8 * nd
        off, size = struct.unpack_from("<QQ", b, p); p += 8 * 4 + 4
        out[name] = b[data_off + off:data_off + off + size]
    return out
assert tensors(sys.argv[1] + "/de-en.tmoe")["tokenizer.vocabulary_map"] == open(sys.argv[2], "rb").read()
assert "tokenizer.vocabulary_map" not in tensors(sys.argv[1] + "/en-de.tmoe")
PY

# NaN in a weight (deep in the decoder): error naming the tensor, nothing left behind.
mkdir "$T/nan" "$T/nanout"; cp "$FIX/task_target/"* "$T/nan/"
/usr/bin/python3 - "$T/nan/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
off = h["decoder.layers.2.ffn.fc2.weight"]["data_offsets"][0]
b[8 + n + off + 40:8 + n + off + 44] = struct.pack("<f", float("nan"))
open(p, "wb").write(b)
PY
expect 1 "tensor 'decoder.layers.2.ffn.fc2.weight' has a non-finite value at element 10" -- --checkpoint "$T/nan" --task de-en --output "$T/nanout/de-en.tmoe"
[ -z "$(ls -A "$T/nanout")" ] || { echo "FAIL: failed conversion left: $(ls -A "$T/nanout")"; fails=$((fails + 1)); }

# Disk full: a file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so write() fails with EFBIG)
# stands in for a full disk; then, where mounting is allowed (root), a real 64 KiB tmpfs (ENOSPC).
mkdir "$T/full"
(ulimit -f 16; trap '' XFSZ; exec "$BIN" --checkpoint "$FIX/task_target" --task de-en --output "$T/full/x.tmoe" \
  --quantization float32 --quiet) 2>"$T/err"
rc=$?
{ [ "$rc" = 1 ] && grep -q "write failed: File too large" "$T/err"; } || { echo "FAIL: file-size limit: rc $rc"; cat "$T/err"; fails=$((fails + 1)); }
[ -z "$(ls -A "$T/full")" ] || { echo "FAIL: file-size limit left: $(ls -A "$T/full")"; fails=$((fails + 1)); }
mkdir "$T/tmpfs"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=64k tmpfs "$T/tmpfs" 2>/dev/null; then
  "$BIN" --checkpoint "$FIX/task_target" --task de-en --output "$T/tmpfs/x.tmoe" --quantization float32 --quiet 2>"$T/err"
  rc=$?
  { [ "$rc" = 1 ] && grep -q "No space left on device" "$T/err"; } || { echo "FAIL: full tmpfs: rc $rc"; cat "$T/err"; fails=$((fails + 1)); }
  [ -z "$(ls -A "$T/tmpfs")" ] || { echo "FAIL: full tmpfs left: $(ls -A "$T/tmpfs")"; fails=$((fails + 1)); }
  umount "$T/tmpfs"
else
  echo "convert_cli: note: no tmpfs could be mounted here; the disk-full case ran with a file-size limit only"
fi

# --list-tasks, --help, --version on stdout.
"$BIN" --checkpoint "$FIX/token_task" --list-tasks >"$T/stdout" 2>&1 || { echo "FAIL: --list-tasks"; fails=$((fails + 1)); }
grep -q "decoder.1: experts 4 (gate 0.5177), 5 (gate 0.4823)" "$T/stdout" || { echo "FAIL: --list-tasks gates"; cat "$T/stdout"; fails=$((fails + 1)); }
grep -q "encoder.1: token-routed: all 6 experts" "$T/stdout" || { echo "FAIL: --list-tasks token"; fails=$((fails + 1)); }
grep -q "file size: float32 .* int8" "$T/stdout" || { echo "FAIL: --list-tasks sizes"; fails=$((fails + 1)); }
"$BIN" --help | grep -q -- "--quantization" || { echo "FAIL: --help"; fails=$((fails + 1)); }
"$BIN" --version | grep -q "^taskmoe-convert [0-9]" || { echo "FAIL: --version"; fails=$((fails + 1)); }

# --verify: float32 extraction reproduces the full model exactly.
"$BIN" --checkpoint "$FIX/token_task" --task en-de --output "$T/v.tmoe" --quantization float32 --verify 4 --quiet >"$T/stdout" 2>&1 || { echo "FAIL: --verify"; cat "$T/stdout"; fails=$((fails + 1)); }
grep -q "4 probes, identical greedy outputs 100.0%, max abs logit difference 0$" "$T/stdout" || { echo "FAIL: --verify output"; cat "$T/stdout"; fails=$((fails + 1)); }
expect 2 "--verify needs a number" -- --checkpoint "$FIX/task_target" --task de-en --output "$T/y.tmoe" --verify x

if [ "$fails" != 0 ]; then echo "$fails failure(s)"; exit 1; fi
echo "convert_cli: all passed"
