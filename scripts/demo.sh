#!/usr/bin/env bash
# The README's main job: build taskmoe-convert and taskmoe-translate (Release), cut the shipped
# multi-task demo checkpoint (models/demo) into one int8 .tmoe file per task, compare sizes, and
# translate a few sentences in several directions. Run after scripts/install-deps.sh.
#
#   scripts/demo.sh
#   env: BUILD (default build/release), MODEL (default models/demo), OUT (default build/demo),
#        QUANTIZATION (default int8; float32 is bit-exact), JOBS (default nproc)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
MODEL=${MODEL:-models/demo}
OUT=${OUT:-build/demo}
Q=${QUANTIZATION:-int8}
JOBS=${JOBS:-$(nproc)}

for f in config.json sentencepiece.model; do
  if [ ! -f "$MODEL/$f" ]; then
    echo "demo.sh: $MODEL is missing (no $MODEL/$f): models/demo is the trained demo checkpoint" \
         "committed with the repository; pull it, or set MODEL=DIR to use another checkpoint" >&2
    exit 1
  fi
done
if ! ls "$MODEL"/model*.safetensors >/dev/null 2>&1; then
  echo "demo.sh: $MODEL has no model.safetensors" >&2
  exit 1
fi
if head -c 100 "$MODEL"/model*.safetensors | grep -q "git-lfs"; then
  echo "demo.sh: $MODEL/model.safetensors is a Git LFS pointer: run 'git lfs pull'" >&2
  exit 1
fi

echo "==> building taskmoe-convert and taskmoe-translate ($BUILD, Release, -j$JOBS)"
gen=()
if [ ! -f "$BUILD/CMakeCache.txt" ] && command -v ninja >/dev/null; then gen=(-G Ninja); fi
cmake -S . -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j "$JOBS" --target taskmoe-convert taskmoe-translate
CONVERT=$BUILD/tools/taskmoe-convert
TRANSLATE=$BUILD/examples/taskmoe-translate

echo
echo "==> converting $MODEL into per-task $Q files in $OUT"
mkdir -p "$OUT"
"$CONVERT" --checkpoint "$MODEL" --all-tasks --quantization "$Q" --output-dir "$OUT" --force

echo
echo "==> sizes"
mb() { awk -v b="$1" 'BEGIN { printf "%8.1f MB", b / 1e6 }'; }
full=$(cat "$MODEL"/model*.safetensors | wc -c)
echo "  $(mb "$full")  $MODEL/model.safetensors (all tasks, all experts, $(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['weights_dtype'])" "$MODEL/config.json" 2>/dev/null || echo '?'))"
for f in "$OUT"/*.tmoe; do
  s=$(stat -c %s "$f")
  echo "  $(mb "$s")  $f  ($(awk -v a="$full" -v b="$s" 'BEGIN { if (a >= b) printf "%.1fx smaller", a / b; else printf "%.2fx the checkpoint", b / a }'))"
done

# A few sentences per source language, in the corpus's style (software UI strings and help).
samples() {
  case $1 in
    en) printf '%s\n' "Could not open the file." "Save the document before closing the window." \
                      "Show hidden files" "The printer is not connected." ;;
    de) printf '%s\n' "Die Datei konnte nicht geöffnet werden." "Einstellungen speichern" \
                      "Wählen Sie einen Ordner aus." ;;
    fr) printf '%s\n' "Impossible d'ouvrir le fichier." "Enregistrer les paramètres" \
                      "Sélectionnez un dossier." ;;
    es) printf '%s\n' "No se pudo abrir el archivo." "Guardar la configuración" \
                      "Seleccione una carpeta." ;;
    ru) printf '%s\n' "Не удалось открыть файл." "Сохранить настройки" "Выберите папку." ;;
    *) return 1 ;;
  esac
}

echo
echo "==> translating (taskmoe-translate, beam 4)"
for task in en-de de-en en-fr fr-en en-es es-en en-ru ru-en; do
  [ -f "$OUT/$task.tmoe" ] || continue
  src=${task%-*}
  samples "$src" >"$OUT/$task.sample.txt" || continue
  echo
  echo "--- $task: $TRANSLATE --model $OUT/$task.tmoe"
  "$TRANSLATE" --model "$OUT/$task.tmoe" --beam 4 -i "$OUT/$task.sample.txt" -o "$OUT/$task.sample.out"
  paste -d '\n' "$OUT/$task.sample.txt" "$OUT/$task.sample.out" | awk 'NR % 2 { printf "  %s\n", $0; next } { printf "    -> %s\n", $0 }'
done

echo
echo "Done. Translate your own text:"
echo "  echo 'Open the file.' | $TRANSLATE --model $OUT/en-de.tmoe"
echo "  $TRANSLATE --model $OUT/de-en.tmoe -i input.txt -o output.txt --verbose"
