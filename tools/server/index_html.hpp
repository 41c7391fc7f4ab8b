#pragma once
// The page taskmoe-server serves at `/`: one self-contained HTML file (no external scripts,
// styles or fonts, so it works offline and under a strict CSP). It reads /languages and posts
// JSON to /translate, the same API clients use. Element ids are what tests/server/browser_test.py
// drives: #source #target #swap #q #translate #result #status.

namespace taskmoe::server {

inline constexpr const char* index_html = R"HTML(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>taskmoe translate</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; }
  .row { display: flex; gap: 1rem; flex-wrap: wrap; }
  .col { flex: 1 1 20rem; display: flex; flex-direction: column; gap: .5rem; }
  textarea, output { font: inherit; min-height: 10rem; padding: .5rem; border: 1px solid #999; border-radius: 4px; }
  output { white-space: pre-wrap; background: #f6f6f6; display: block; }
  select, button { font: inherit; padding: .3rem .6rem; }
  #status { color: #a00; min-height: 1.2rem; }
  footer { margin-top: 2rem; font-size: .85rem; color: #666; }
</style>
</head>
<body>
<h1>taskmoe translate</h1>
<div class="row">
  <div class="col">
    <label>From <select id="source" aria-label="source language"></select></label>
    <textarea id="q" aria-label="text to translate" placeholder="Text to translate (one sentence per line)"></textarea>
  </div>
  <div class="col">
    <label>To <select id="target" aria-label="target language"></select>
      <button id="swap" type="button" title="swap languages">&#8646;</button></label>
    <output id="result" aria-live="polite"></output>
  </div>
</div>
<p><button id="translate" type="button">Translate</button> <span id="status"></span></p>
<footer>LibreTranslate-compatible API: <code>POST /translate</code>, <code>GET /languages</code>,
<code>GET /health</code>, <code>GET /metrics</code>. Served by taskmoe-server.</footer>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let languages = [];
function fillTargets() {
  const src = languages.find((l) => l.code === $("source").value);
  const keep = $("target").value;
  $("target").innerHTML = "";
  for (const code of (src ? src.targets : [])) {
    const l = languages.find((x) => x.code === code);
    $("target").add(new Option(l ? l.name : code, code));
  }
  if ([...$("target").options].some((o) => o.value === keep)) $("target").value = keep;
}
async function load() {
  try {
    const r = await fetch("languages");
    languages = await r.json();
    for (const l of languages.filter((l) => l.targets.length > 0)) $("source").add(new Option(l.name, l.code));
    fillTargets();
    document.body.dataset.ready = "1";
  } catch (e) {
    $("status").textContent = "cannot read /languages: " + e;
  }
}
async function translate() {
  $("status").textContent = "";
  $("translate").disabled = true;
  try {
    const r = await fetch("translate", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({q: $("q").value, source: $("source").value, target: $("target").value, format: "text"}),
    });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
    $("result").value = body.translatedText;
    $("result").textContent = body.translatedText;
  } catch (e) {
    $("status").textContent = String(e.message || e);
  } finally {
    $("translate").disabled = false;
  }
}
$("source").addEventListener("change", fillTargets);
$("swap").addEventListener("click", () => {
  const s = $("source").value, t = $("target").value;
  if (![...$("source").options].some((o) => o.value === t)) return;
  $("source").value = t;
  fillTargets();
  if ([...$("target").options].some((o) => o.value === s)) $("target").value = s;
});
$("translate").addEventListener("click", translate);
$("q").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) translate(); });
load();
</script>
</body>
</html>
)HTML";

}  // namespace taskmoe::server
