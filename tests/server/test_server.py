#!/usr/bin/python3
"""taskmoe-server integration tests: the real server on loopback ports, python3-requests as the
client. Every endpoint, every error status, unicode, list q, concurrent clients, answers equal to
taskmoe-translate's, graceful SIGTERM with requests in flight, hostile HTTP.

  tests/server/test_server.py --server build/x/tools/taskmoe-server \
      --translate build/x/examples/taskmoe-translate --convert build/x/tools/taskmoe-convert \
      --checkpoint models/demo [unittest args]
"""

import argparse
import concurrent.futures
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
import unittest

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_util import Server, run_cli, wait_until  # noqa: E402

ARGS = None

# A few lines per source language (the demo model's domain: software messages), including
# non-ASCII, an empty line and emoji, so the CLI comparison covers what clients send.
LINES = {
    "en": ["Could not open the file.", "The printer is not connected.", "Show hidden files",
           "Save the document before closing the window.", "", "Delete 3 items? 🗑️"],
    "de": ["Die Datei konnte nicht geöffnet werden.", "Einstellungen speichern", "Größe ändern"],
    "fr": ["Sélectionnez un dossier.", "Impossible d'ouvrir le fichier « a.txt ».", "Paramètres"],
    "es": ["No se pudo abrir el archivo.", "¿Guardar los cambios?", "Configuración"],
    "ru": ["Сохранить настройки", "Не удалось открыть файл.", "Показать скрытые файлы"],
}


def cli_translate(task, lines):
    """taskmoe-translate's output for `lines` (its defaults), one string per line."""
    r = run_cli(ARGS.translate, ["--checkpoint", ARGS.checkpoint, "--task", task, "--quiet"],
                "".join(l + "\n" for l in lines))
    if r.returncode != 0:
        raise RuntimeError("taskmoe-translate failed: %s" % r.stderr)
    out = r.stdout.split("\n")
    assert out[-1] == "", out
    return out[:-1]


class Base(unittest.TestCase):
    server = None

    def post(self, body=None, server=None, **kw):
        s = server or self.server
        if body is not None:
            kw["json"] = body
        return requests.post(s.url + "/translate", timeout=150, **kw)

    def assert_error(self, r, status, pattern):
        self.assertEqual(r.status_code, status, r.text)
        self.assertTrue(r.headers["Content-Type"].startswith("application/json"), r.headers)
        body = r.json()
        self.assertIsInstance(body.get("error"), str, body)
        self.assertRegex(body["error"], pattern)
        return body


class CommandLine(unittest.TestCase):
    def run_server(self, *args, timeout=60):
        return run_cli(ARGS.server, list(args), timeout=timeout)

    def test_help_and_version(self):
        r = self.run_server("--help")
        self.assertEqual(r.returncode, 0)
        for opt in ["--models", "--checkpoint", "--quantization", "--port", "--host", "--threads",
                    "--max-batch-tokens", "--batch-wait-ms", "--max-chars", "--api-keys", "--queue",
                    "--timeout-ms", "--no-batching", "--tasks"]:
            self.assertIn(opt, r.stdout)
        r = self.run_server("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^taskmoe-server \d+\.\d+\.\d+")

    def test_usage_errors_exit_2(self):
        cases = [
            ([], "--checkpoint DIR or --models DIR"),
            (["--checkpoint", ARGS.checkpoint, "--models", "x"], "one of them"),
            (["--checkpoint", ARGS.checkpoint, "--bogus"], "unknown argument '--bogus'"),
            (["--checkpoint", ARGS.checkpoint, "--port", "70000"], "--port needs an integer"),
            (["--checkpoint", ARGS.checkpoint, "--threads", "zero"], "--threads needs an integer"),
            (["--checkpoint", ARGS.checkpoint, "--threads"], "--threads needs a value"),
            (["--checkpoint", ARGS.checkpoint, "--quantization", "int4"], "--quantization takes int8"),
            (["--models", "/tmp", "--quantization", "int8"], "applies to --checkpoint"),
            (["--checkpoint", ARGS.checkpoint, "--tasks", "en-de,,fr-en"], "comma-separated"),
            (["--checkpoint", ARGS.checkpoint, "--no-batching=1"], "takes no value"),
            (["--checkpoint", ARGS.checkpoint, "--queue", "10", "--batch-limit", "20"], "--batch-limit"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                r = self.run_server(*args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(message, r.stderr)

    def test_runtime_errors_exit_1(self):
        with tempfile.TemporaryDirectory() as d:
            empty_keys = os.path.join(d, "keys")
            with open(empty_keys, "w") as f:
                f.write("# no keys\n\n")
            cases = [
                (["--checkpoint", os.path.join(d, "missing")], "error"),
                (["--models", d], "no .tmoe files"),
                (["--checkpoint", ARGS.checkpoint, "--tasks", "xx-yy"], "xx-yy"),
                (["--checkpoint", ARGS.checkpoint, "--tasks", "en-de", "--api-keys", empty_keys], "no API keys"),
                (["--checkpoint", ARGS.checkpoint, "--tasks", "en-de", "--api-keys", os.path.join(d, "nope")],
                 "cannot open"),
                (["--checkpoint", ARGS.checkpoint, "--tasks", "en-de", "--host", "192.0.2.1"], "cannot listen"),
            ]
            for args, message in cases:
                with self.subTest(args=args):
                    r = self.run_server("--port", "0", *args)
                    self.assertEqual(r.returncode, 1, r.stderr)
                    self.assertIn(message, r.stderr)

    def test_port_in_use(self):
        with Server(ARGS.server, ["--checkpoint", ARGS.checkpoint, "--tasks", "en-de", "--threads", "1"]) as s:
            r = self.run_server("--checkpoint", ARGS.checkpoint, "--tasks", "en-de", "--port", str(s.port))
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("cannot listen on 127.0.0.1:%d" % s.port, r.stderr)
            self.assertEqual(requests.get(s.url + "/health", timeout=10).status_code, 200)
            self.assertEqual(s.stop(), 0)


class Api(Base):
    """The main server: every task of the demo checkpoint."""

    @classmethod
    def setUpClass(cls):
        # A long timeout: the ASan leg's -O0 build on a slow CPU (AMD Zen 1, the other core busy
        # with the rest of ctest) took over the default 30 s for the long-input requests.
        cls.server = Server(ARGS.server, ["--checkpoint", ARGS.checkpoint, "--threads", "2", "--timeout-ms", "120000"])
        cls.expected = {}  # (task, line) -> taskmoe-translate's output
        for task in ["en-de", "en-fr", "en-es", "en-ru", "de-en", "fr-en", "es-en", "ru-en"]:
            lines = LINES[task[:2]]
            for line, out in zip(lines, cli_translate(task, lines)):
                cls.expected[(task, line)] = out

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        assert rc == 0, cls.server.text_log()

    def expect(self, task, line):
        return self.expected[(task, line)]

    # --- the endpoints -------------------------------------------------------------------------

    def test_languages(self):
        r = requests.get(self.server.url + "/languages", timeout=10)
        self.assertEqual(r.status_code, 200)
        langs = {l["code"]: l for l in r.json()}
        self.assertEqual(set(langs), {"de", "en", "es", "fr", "ru"})
        self.assertEqual(langs["en"]["targets"], ["de", "es", "fr", "ru"])
        self.assertEqual(langs["en"]["name"], "English")
        self.assertEqual(langs["ru"]["name"], "Russian")
        for code in ["de", "es", "fr", "ru"]:
            self.assertEqual(langs[code]["targets"], ["en"])

    def test_health(self):
        r = requests.get(self.server.url + "/health", timeout=10)
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.json()["status"], "ok")
        self.assertEqual(len(r.json()["tasks"]), 8)

    def test_index_page_is_self_contained(self):
        r = requests.get(self.server.url + "/", timeout=10)
        self.assertEqual(r.status_code, 200)
        self.assertTrue(r.headers["Content-Type"].startswith("text/html"))
        for needle in ["<textarea", 'id="source"', 'id="target"', 'id="translate"', "fetch("]:
            self.assertIn(needle, r.text)
        self.assertNotRegex(r.text, r"(src|href)\s*=\s*[\"']?(https?:)?//", "external asset")

    def test_metrics(self):
        before = requests.get(self.server.url + "/metrics", timeout=10).text
        self.assertEqual(self.post({"q": "Show hidden files", "source": "en", "target": "fr"}).status_code, 200)
        self.assertEqual(self.post({"q": 5, "source": "en", "target": "fr"}).status_code, 400)
        r = requests.get(self.server.url + "/metrics", timeout=10)
        self.assertEqual(r.status_code, 200)
        self.assertTrue(r.headers["Content-Type"].startswith("text/plain"))

        def value(text, name):
            m = re.search("^" + re.escape(name) + r" (\S+)$", text, re.M)
            return float(m.group(1)) if m else 0.0

        ok = 'taskmoe_http_requests_total{endpoint="/translate",status="200"}'
        bad = 'taskmoe_http_requests_total{endpoint="/translate",status="400"}'
        self.assertGreaterEqual(value(r.text, ok) - value(before, ok), 1)
        self.assertGreaterEqual(value(r.text, bad) - value(before, bad), 1)
        self.assertGreater(value(r.text, 'taskmoe_sentences_total{task="en-fr"}'), 0)
        self.assertGreater(value(r.text, 'taskmoe_target_tokens_total{task="en-fr"}'), 0)
        for family in ["taskmoe_translate_duration_seconds_bucket", "taskmoe_batch_sentences_bucket",
                       "taskmoe_queue_depth", "taskmoe_in_flight_requests", "taskmoe_source_tokens_total"]:
            self.assertIn(family, r.text)
        # Every sample line parses as Prometheus text: name{labels} value.
        for line in r.text.splitlines():
            if line and not line.startswith("#"):
                self.assertRegex(line, r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+\-]+$')

    # --- translation ---------------------------------------------------------------------------

    def test_answers_equal_taskmoe_translate_for_every_task(self):
        for task in ["en-de", "en-fr", "en-es", "en-ru", "de-en", "fr-en", "es-en", "ru-en"]:
            src, tgt = task.split("-")
            for line in LINES[src]:
                if not line:
                    continue
                with self.subTest(task=task, line=line):
                    r = self.post({"q": line, "source": src, "target": tgt})
                    self.assertEqual(r.status_code, 200, r.text)
                    self.assertEqual(r.json(), {"translatedText": self.expect(task, line)})

    def test_list_q(self):
        lines = LINES["ru"] + ["", "Сохранить настройки"]
        r = self.post({"q": lines, "source": "ru", "target": "en"})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["translatedText"], [self.expect("ru-en", l) if l else "" for l in lines])

    def test_multi_line_text_is_translated_line_by_line(self):
        lines = LINES["en"][:3]
        text = lines[0] + "\n\n" + lines[1] + "\r\n" + lines[2]
        r = self.post({"q": text, "source": "en", "target": "de"})
        self.assertEqual(r.status_code, 200, r.text)
        want = "\n".join([self.expect("en-de", lines[0]), "", self.expect("en-de", lines[1]),
                          self.expect("en-de", lines[2])])
        self.assertEqual(r.json()["translatedText"], want)

    def test_unicode_round_trip(self):
        line = LINES["en"][5]  # emoji
        r = self.post({"q": line, "source": "en", "target": "ru"})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.json()["translatedText"], self.expect("en-ru", line))
        self.assertRegex(r.json()["translatedText"], "[а-яА-Я]")  # Cyrillic came back intact
        # Escaped in JSON (\u sequences, a surrogate pair) means the same text.
        raw = json.dumps({"q": "Сохранить настройки", "source": "ru", "target": "en"}, ensure_ascii=True)
        r = requests.post(self.server.url + "/translate", data=raw.encode(),
                          headers={"Content-Type": "application/json; charset=utf-8"}, timeout=60)
        self.assertEqual(r.json()["translatedText"], self.expect("ru-en", "Сохранить настройки"))
        # NUL and control characters are accepted (dropped by the tokenizer), never a crash.
        r = self.post({"q": "Show\u0000 hidden\u0007 files\u001b", "source": "en", "target": "fr"})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertIsInstance(r.json()["translatedText"], str)

    def test_form_urlencoded_multipart_and_query(self):
        line = "Could not open the file."
        want = {"translatedText": self.expect("en-de", line)}
        r = self.post(data={"q": line, "source": "en", "target": "de", "format": "text"})
        self.assertEqual((r.status_code, r.json()), (200, want))
        r = self.post(files={"q": (None, line), "source": (None, "en"), "target": (None, "de")})
        self.assertEqual((r.status_code, r.json()), (200, want))
        r = requests.post(self.server.url + "/translate", params={"q": line, "source": "en", "target": "de"},
                          timeout=60)
        self.assertEqual((r.status_code, r.json()), (200, want))

    def test_alternatives(self):
        line = "Save the document before closing the window."
        r = self.post({"q": line, "source": "en", "target": "fr", "alternatives": 3})
        self.assertEqual(r.status_code, 200, r.text)
        body = r.json()
        self.assertEqual(body["translatedText"], self.expect("en-fr", line))
        alts = body["alternatives"]
        self.assertIsInstance(alts, list)
        self.assertTrue(1 <= len(alts) <= 3, alts)
        self.assertNotIn(body["translatedText"], alts)
        self.assertEqual(len(set(alts)), len(alts))
        r = self.post(data={"q": line, "source": "en", "target": "fr", "alternatives": "2"})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertLessEqual(len(r.json()["alternatives"]), 2)
        r = self.post({"q": [line, "Show hidden files"], "source": "en", "target": "fr", "alternatives": 1})
        body = r.json()
        self.assertEqual(len(body["alternatives"]), 2)
        self.assertTrue(all(isinstance(a, list) and len(a) <= 1 for a in body["alternatives"]), body)
        r = self.post({"q": line, "source": "en", "target": "fr", "alternatives": 0})
        self.assertEqual(r.json(), {"translatedText": self.expect("en-fr", line)})
        r = self.post({"q": line, "source": "en", "target": "fr", "alternatives": -2})  # as LibreTranslate
        self.assertEqual(r.json(), {"translatedText": self.expect("en-fr", line)})

    def test_long_input_is_truncated_and_flagged(self):
        r = self.post({"q": "file " * 600, "source": "en", "target": "de"})
        self.assertEqual(r.status_code, 200, r.text)
        self.assertEqual(r.headers.get("X-Taskmoe-Truncated"), "1")

    def test_cors(self):
        r = requests.options(self.server.url + "/translate", timeout=10,
                             headers={"Origin": "https://example.org", "Access-Control-Request-Method": "POST"})
        self.assertEqual(r.status_code, 204)
        self.assertEqual(r.headers["Access-Control-Allow-Origin"], "*")

    # --- errors ----------------------------------------------------------------------------------

    def test_bad_requests_get_400_with_a_json_error(self):
        ok = {"q": "Hello", "source": "en", "target": "de"}
        cases = [
            ({"source": "en", "target": "de"}, "missing q"),
            (dict(ok, q=""), "missing q"),
            (dict(ok, q=[]), "missing q"),
            (dict(ok, q=None), "missing q"),
            (dict(ok, q=42), "q must be a string or a list of strings, not number"),
            (dict(ok, q={"a": "b"}), "not object"),
            (dict(ok, q=["a", 1]), r"item 1 is number"),
            (dict(ok, q=["a", ["b"]]), r"item 1 is array"),
            ({"q": "Hello", "target": "de"}, "missing source"),
            ({"q": "Hello", "source": "en"}, "missing target"),
            (dict(ok, source=7), "source must be a string"),
            (dict(ok, source="auto"), "auto"),
            (dict(ok, source="xx"), "xx is not supported"),
            (dict(ok, target="zz"), "zz is not supported"),
            (dict(ok, source="de", target="fr"), r"French \(fr\) is not available as a target language from German"),
            (dict(ok, target="en"), "not available"),
            (dict(ok, format="html"), "html format is not supported"),
            (dict(ok, format="markdown"), "markdown format is not supported"),
            (dict(ok, alternatives="many"), "alternatives parameter is not a number"),
            (dict(ok, alternatives=[1]), "alternatives parameter is not a number"),
            (dict(ok, alternatives=4), "alternatives parameter must be <= 3"),
            (dict(ok, q=["x"] * 129), r"request \(129\) exceeds text limit \(128\)"),
            (dict(ok, q="x" * 5001), r"request \(5001\) exceeds text limit \(5000\)"),
            (dict(ok, q="é" * 5001), r"request \(5001\) exceeds"),  # characters, not bytes
        ]
        for body, pattern in cases:
            with self.subTest(body=str(body)[:80]):
                self.assert_error(self.post(body), 400, pattern)
        self.assertEqual(self.post(dict(ok, q="é" * 5000)).status_code, 200)
        r = requests.post(self.server.url + "/detect", json={"q": "Hallo"}, timeout=10)
        self.assert_error(r, 400, "detection is not supported")

    def test_broken_bodies(self):
        url = self.server.url + "/translate"
        js = {"Content-Type": "application/json"}
        cases = [
            (b'{"q": "Hello", "source": "en",', js, 400, "not valid JSON"),
            (b"", js, 400, "not valid JSON"),
            (b'["Hello", "en", "de"]', js, 400, "must be an object, not array"),
            (b'"Hello"', js, 400, "must be an object"),
            (b'{"q": "\xff\xfe", "source": "en", "target": "de"}', js, 400, "not valid JSON"),  # not UTF-8
            (b'{"q": "\\ud800", "source": "en", "target": "de"}', js, 400, "not valid JSON"),  # lone surrogate
            (b"q=Hello&source=en&target=de", {"Content-Type": "text/plain"}, 415, "unsupported Content-Type"),
            (b"q=%FF%FEx&source=en&target=de", {"Content-Type": "application/x-www-form-urlencoded"}, 400,
             "not valid UTF-8"),
            (b'{"q": ' + b"[" * 100000 + b"]" * 100000 + b', "source": "en", "target": "de"}', js, 400,
             "nested deeper than 16"),
            (b'{"q": ["a", ["b", ["c"]]], "source": "en", "target": "de"}', js, 400, "item 1 is array"),
        ]
        for data, headers, status, pattern in cases:
            with self.subTest(data=data[:60]):
                self.assert_error(requests.post(url, data=data, headers=headers, timeout=60), status, pattern)

    def test_oversized_bodies_get_413(self):
        url = self.server.url + "/translate"
        big = json.dumps({"q": ["x" * 5000] * 200, "source": "en", "target": "de"})  # > the 3.9 MB limit? no:
        self.assertLess(len(big), 128 * 5000 * 6 + 65536)
        huge = b'{"q": "' + b"a" * (5 * 1024 * 1024) + b'", "source": "en", "target": "de"}'
        self.assert_error(requests.post(url, data=huge, headers={"Content-Type": "application/json"}, timeout=60),
                          413, "request too large")
        form = b"q=" + b"a" * 9000 + b"&source=en&target=de"
        self.assert_error(requests.post(url, data=form, headers={"Content-Type": "application/x-www-form-urlencoded"},
                                        timeout=60), 413, "send JSON")
        # A huge list is refused by count before anything is encoded.
        r = self.post({"q": ["Hello"] * 100000, "source": "en", "target": "de"})
        self.assert_error(r, 400, "exceeds text limit")
        self.assertEqual(requests.get(self.server.url + "/health", timeout=10).status_code, 200)

    def test_unknown_paths_and_wrong_methods(self):
        u = self.server.url
        self.assert_error(requests.get(u + "/nope", timeout=10), 404, "not found: /nope")
        self.assert_error(requests.post(u + "/translate/x", json={}, timeout=10), 404, "not found")
        r = requests.get(u + "/translate", timeout=10)
        self.assert_error(r, 405, "not allowed")
        self.assertEqual(r.headers["Allow"], "POST")
        for method in ["POST", "PUT", "DELETE"]:
            with self.subTest(method=method):
                r = requests.request(method, u + "/languages", timeout=10)
                self.assert_error(r, 405, "not allowed")
                self.assertIn("GET", r.headers["Allow"])

    def test_malformed_http_and_slow_clients(self):
        # Garbage instead of a request line: 400, and the server keeps serving.
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10) as s:
            s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            self.assertIn(b" 400 ", s.recv(4096).split(b"\r\n")[0] + b" ")
        # Slowloris: half a request, then silence. The server gives up after its read timeout
        # (5 s: a 400, or just closing), and answers others meanwhile.
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=15) as slow:
            slow.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")
            t0 = time.monotonic()
            r = self.post({"q": "Show hidden files", "source": "en", "target": "de"})
            self.assertEqual(r.status_code, 200)
            data = b""
            try:
                while True:
                    chunk = slow.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                pass
            elapsed = time.monotonic() - t0
        self.assertTrue(data == b"" or data.startswith(b"HTTP/1.1 400 "), data)
        self.assertGreater(elapsed, 3)
        self.assertLess(elapsed, 12)

    def test_concurrent_clients_are_batched_and_answered_correctly(self):
        jobs = []
        for i in range(48):
            task = ["en-de", "en-fr", "de-en", "ru-en"][i % 4]
            line = [l for l in LINES[task[:2]] if l][i % 3]
            jobs.append((task, line))

        def one(job):
            task, line = job
            src, tgt = task.split("-")
            r = requests.post(self.server.url + "/translate", json={"q": line, "source": src, "target": tgt},
                              timeout=60)
            return r.status_code, r.json().get("translatedText")

        def batches():
            text = requests.get(self.server.url + "/metrics", timeout=10).text
            count = float(re.search(r"^taskmoe_batch_sentences_count (\S+)$", text, re.M).group(1))
            total = float(re.search(r"^taskmoe_batch_sentences_sum (\S+)$", text, re.M).group(1))
            return count, total

        c0, s0 = batches()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, jobs))
        c1, s1 = batches()
        for (task, line), (status, text) in zip(jobs, results):
            self.assertEqual(status, 200)
            self.assertEqual(text, self.expect(task, line), (task, line))
        self.assertEqual(s1 - s0, len(jobs))
        self.assertLess(c1 - c0, len(jobs), "16 concurrent clients on 2 workers never shared a batch")


class Limits(Base):
    """API keys, small limits, a full queue, timeouts."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        keys = os.path.join(cls.tmp.name, "keys.txt")
        with open(keys, "w") as f:
            f.write("# operators' keys\nsecret-one\n  secret-two  \n\n")
        cls.server = Server(ARGS.server, ["--checkpoint", ARGS.checkpoint, "--tasks", "en-de,de-en",
                                          "--threads", "1", "--api-keys", keys, "--max-chars", "50",
                                          "--batch-limit", "3"])
        # Sentences wait 5 s for company, longer than the 1.5 s timeout: every request times out,
        # and the queue (4 sentences) fills.
        cls.slow = Server(ARGS.server, ["--checkpoint", ARGS.checkpoint, "--tasks", "en-de", "--threads", "1",
                                        "--batch-wait-ms", "5000", "--timeout-ms", "1500", "--queue", "4",
                                        "--batch-limit", "4"])

    @classmethod
    def tearDownClass(cls):
        for s in (cls.server, cls.slow):
            assert s.stop() == 0, s.text_log()
        cls.tmp.cleanup()

    def test_api_keys(self):
        body = {"q": "Einstellungen speichern", "source": "de", "target": "en"}
        self.assert_error(self.post(body), 400, "missing api_key")
        self.assert_error(self.post(dict(body, api_key="")), 400, "missing api_key")
        self.assert_error(self.post(dict(body, api_key="wrong")), 403, "Invalid API key")
        self.assert_error(self.post(dict(body, api_key=17)), 403, "Invalid API key")
        want = cli_translate("de-en", [body["q"]])[0]
        for key in ["secret-one", "secret-two"]:
            r = self.post(dict(body, api_key=key))
            self.assertEqual((r.status_code, r.json()), (200, {"translatedText": want}))
        r = self.post(data=dict(body, api_key="secret-two"))
        self.assertEqual((r.status_code, r.json()), (200, {"translatedText": want}))
        # Languages and health stay open (as LibreTranslate's).
        self.assertEqual(requests.get(self.server.url + "/languages", timeout=10).status_code, 200)

    def test_small_limits(self):
        body = {"q": "x" * 51, "source": "en", "target": "de", "api_key": "secret-one"}
        self.assert_error(self.post(body), 400, r"request \(51\) exceeds text limit \(50\)")
        self.assert_error(self.post(dict(body, q=["a", "b", "c", "d"])), 400, r"request \(4\) exceeds text limit \(3\)")
        self.assertEqual(self.post(dict(body, q=["a", "b", "c"])).status_code, 200)
        # The body limit follows the text limits: 3 texts * 50 characters * 6 bytes + 64 KiB.
        r = self.post(dict(body, q="a" * 70000))
        self.assert_error(r, 413, "request too large")

    def test_full_queue_gets_503_and_slow_requests_time_out(self):
        def one(lines):
            return requests.post(self.slow.url + "/translate",
                                 json={"q": lines, "source": "en", "target": "de"}, timeout=30)

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(one, ["a", "b", "c"])  # 3 of the 4 places
            wait_until(lambda: requests.get(self.slow.url + "/health", timeout=5).json()["queued"] >= 3, 5)
            second = pool.submit(one, ["d", "e"])  # 3 + 2 > 4
            r2, r1 = second.result(), first.result()
        self.assert_error(r2, 503, "busy")
        self.assertEqual(r2.headers.get("Retry-After"), "1")
        self.assert_error(r1, 503, "timed out after 1500 ms")
        # A request that is not answered in time is dropped from the queue, not translated later.
        self.assertTrue(wait_until(lambda: requests.get(self.slow.url + "/health", timeout=5).json()["queued"] == 0, 5))
        metrics = requests.get(self.slow.url + "/metrics", timeout=5).text
        self.assertIn('taskmoe_rejected_requests_total{reason="queue_full"} 1', metrics)
        self.assertIn('taskmoe_rejected_requests_total{reason="timeout"} 1', metrics)
        self.assertIn("taskmoe_sentences_total", metrics)
        self.assertNotIn('taskmoe_sentences_total{task="en-de"}', metrics)  # nothing was translated


class Int8(unittest.TestCase):
    """--checkpoint --quantization int8 quantizes at load as taskmoe-convert does: the server's
    answers equal taskmoe-translate's on the converted int8 files."""

    def test_int8_at_load_answers_like_converted_files(self):
        tasks = ["en-de", "ru-en"]
        with tempfile.TemporaryDirectory() as d:
            r = run_cli(ARGS.convert, ["--checkpoint", ARGS.checkpoint, "--output-dir", d, "--quantization", "int8",
                                       "--quiet"] + sum((["--task", t] for t in tasks), []))
            self.assertEqual(r.returncode, 0, r.stderr)
            want = {}
            for t in tasks:
                lines = [l for l in LINES[t[:2]] if l]
                out = run_cli(ARGS.translate, ["--model", os.path.join(d, t + ".tmoe"), "--quiet"],
                              "".join(l + "\n" for l in lines))
                self.assertEqual(out.returncode, 0, out.stderr)
                want[t] = (lines, out.stdout.split("\n")[:-1])
            for model in (["--checkpoint", ARGS.checkpoint, "--quantization", "int8"], ["--models", d]):
                with self.subTest(model=model[0]), \
                        Server(ARGS.server, model + ["--tasks", ",".join(tasks), "--threads", "2"]) as s:
                    for t, (lines, outs) in want.items():
                        src, tgt = t.split("-")
                        r = requests.post(s.url + "/translate", json={"q": lines, "source": src, "target": tgt},
                                          timeout=60)
                        self.assertEqual(r.status_code, 200, r.text)
                        self.assertEqual(r.json()["translatedText"], outs, t)
                    self.assertEqual(s.stop(), 0)


class VocabularyMaps(unittest.TestCase):
    def test_vocabulary_maps_answer_like_taskmoe_translate_with_the_map(self):
        # en-de gets a shortlist (its 3000 lowest piece ids always, plus a rule), ru-en none: each
        # task answers exactly as taskmoe-translate does with (or without) that map.
        # The pieces in id order, from the sentencepiece package's CLI (no Python module needed).
        vocab = run_cli("spm_export_vocab", ["--model=" + os.path.join(ARGS.checkpoint, "sentencepiece.model")], "")
        self.assertEqual(vocab.returncode, 0, vocab.stderr)
        pieces = [line.split("\t")[0] for line in vocab.stdout.split("\n") if line]
        tasks = ["en-de", "ru-en"]
        with tempfile.TemporaryDirectory() as maps:
            vmap = os.path.join(maps, "en-de.vmap.txt")
            with open(vmap, "w", encoding="utf-8") as f:
                f.write("\t" + " ".join(pieces[4:3000]) + "\n")
                f.write("▁file\t" + " ".join(pieces[5000:5100]) + "\n")
            want = {}
            for t in tasks:
                lines = [l for l in LINES[t[:2]] if l]
                extra = ["--vocabulary-map", vmap] if t == "en-de" else []
                out = run_cli(ARGS.translate, ["--checkpoint", ARGS.checkpoint, "--task", t, "--quiet"] + extra,
                              "".join(l + "\n" for l in lines))
                self.assertEqual(out.returncode, 0, out.stderr)
                want[t] = (lines, out.stdout.split("\n")[:-1])
            self.assertNotEqual(want["en-de"][1], cli_translate("en-de", want["en-de"][0]))  # the map matters
            with Server(ARGS.server, ["--checkpoint", ARGS.checkpoint, "--tasks", ",".join(tasks),
                                      "--vocabulary-maps", maps]) as s:
                for t, (lines, outs) in want.items():
                    src, tgt = t.split("-")
                    r = requests.post(s.url + "/translate", json={"q": lines, "source": src, "target": tgt}, timeout=60)
                    self.assertEqual(r.status_code, 200, r.text)
                    self.assertEqual(r.json()["translatedText"], outs, t)
                self.assertEqual(s.stop(), 0)
            r = run_cli(ARGS.server, ["--checkpoint", ARGS.checkpoint, "--vocabulary-maps", os.path.join(maps, "no")])
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("not a directory", r.stderr)

            # The same map embedded by taskmoe-convert --vocabulary-maps (en-de gets it, ru-en has
            # none): --models serves each file as taskmoe-translate does with it alone, and
            # --no-vocabulary-maps as taskmoe-translate --no-vocabulary-map.
            with tempfile.TemporaryDirectory() as models:
                r = run_cli(ARGS.convert, ["--checkpoint", ARGS.checkpoint, "--output-dir", models, "--quantization",
                                           "float32", "--vocabulary-maps", maps, "--quiet"] +
                            sum((["--task", t] for t in tasks), []))
                self.assertEqual(r.returncode, 0, r.stderr)
                for flags in ([], ["--no-vocabulary-maps"]):
                    want = {}
                    for t in tasks:
                        lines = [l for l in LINES[t[:2]] if l]
                        out = run_cli(ARGS.translate, ["--model", os.path.join(models, t + ".tmoe"), "--quiet"] +
                                      (["--no-vocabulary-map"] if flags else []), "".join(l + "\n" for l in lines))
                        self.assertEqual(out.returncode, 0, out.stderr)
                        want[t] = (lines, out.stdout.split("\n")[:-1])
                    # float32 extraction is exact: without the map the file answers like the checkpoint.
                    self.assertEqual(want["en-de"][1] == cli_translate("en-de", want["en-de"][0]), bool(flags))
                    with Server(ARGS.server, ["--models", models] + flags) as s:
                        for t, (lines, outs) in want.items():
                            src, tgt = t.split("-")
                            r = requests.post(s.url + "/translate", json={"q": lines, "source": src, "target": tgt},
                                              timeout=60)
                            self.assertEqual(r.status_code, 200, r.text)
                            self.assertEqual(r.json()["translatedText"], outs, (t, flags))
                        self.assertEqual(s.stop(), 0)
                # A map that does not parse (its bytes overwritten; --no-verify skips the checksum
                # that would catch it) fails the start, naming the file, instead of every request.
                path = os.path.join(models, "en-de.tmoe")
                with open(vmap, "rb") as f:
                    text = f.read()
                with open(path, "r+b") as f:
                    at = f.read().find(text)
                    self.assertGreater(at, 0)
                    f.seek(at)
                    f.write(b"x" * len(text))
                r = run_cli(ARGS.server, ["--models", models, "--no-verify"])
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn(path + ": embedded vocabulary map: line 1: no tab", r.stderr)
                with Server(ARGS.server, ["--models", models, "--no-verify", "--no-vocabulary-maps"]) as s:
                    self.assertEqual(s.stop(), 0)


class Shutdown(unittest.TestCase):
    def test_sigterm_finishes_requests_in_flight(self):
        # Sentences wait up to 10 s for company, so the requests are surely queued when SIGTERM
        # comes; stopping sends them to the workers at once.
        s = Server(ARGS.server, ["--checkpoint", ARGS.checkpoint, "--tasks", "en-de,en-fr", "--threads", "2",
                                 "--batch-wait-ms", "10000"])
        try:
            lines = [l for l in LINES["en"] if l]
            jobs = [("de", lines[:3]), ("fr", lines[3:]), ("de", lines[3:]), ("fr", lines[:2])]

            def one(job):
                target, q = job
                r = requests.post(s.url + "/translate", json={"q": q, "source": "en", "target": target}, timeout=60)
                return r.status_code, r.json()

            with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
                futures = [pool.submit(one, j) for j in jobs]
                queued = sum(len(q) for _, q in jobs)
                self.assertTrue(wait_until(
                    lambda: requests.get(s.url + "/health", timeout=5).json()["queued"] == queued, 10), s.text_log())
                t0 = time.monotonic()
                rc = s.stop(timeout=20)
                results = [f.result() for f in futures]
            self.assertEqual(rc, 0, s.text_log())
            self.assertLess(time.monotonic() - t0, 8)  # not the 10 s batch wait
            self.assertIn("SIGTERM", s.text_log())
            for (target, q), (status, body) in zip(jobs, results):
                self.assertEqual(status, 200, body)
                self.assertEqual(body["translatedText"], cli_translate("en-" + target, q))
            with self.assertRaises(requests.ConnectionError):
                requests.get(s.url + "/health", timeout=5)
        finally:
            s.kill()


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True)
    p.add_argument("--translate", required=True, help="taskmoe-translate, the reference for answers")
    p.add_argument("--convert", required=True, help="taskmoe-convert, for the int8 comparison")
    p.add_argument("--checkpoint", required=True)
    ARGS, rest = p.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
