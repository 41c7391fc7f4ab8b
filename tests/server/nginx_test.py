#!/usr/bin/python3
"""Scale-out as people run it: two taskmoe-servers, each serving the tasks into some target
languages, behind nginx (Debian's package) as the load balancer, with the configuration
tools/server/nginx_conf.py writes. All on loopback, no root needed (nginx -p DIR).

Server A serves en-de and en-fr (targets de, fr); server B the other six tasks (targets en, es,
ru). Clients talk plain LibreTranslate to nginx.

  tests/server/nginx_test.py --server build/x/tools/taskmoe-server --checkpoint models/demo
"""

import argparse
import concurrent.futures
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from server_util import Server, wait_until  # noqa: E402

NGINX_CONF = os.path.join(HERE, "..", "..", "tools", "server", "nginx_conf.py")
ARGS = None
TASKS_A = ["en-de", "en-fr"]
TASKS_B = ["en-es", "en-ru", "de-en", "fr-en", "es-en", "ru-en"]
LINE = {"en": "Could not open the file.", "de": "Einstellungen speichern", "fr": "Sélectionnez un dossier.",
        "es": "No se pudo abrir el archivo.", "ru": "Сохранить настройки"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sentences(server, task):
    text = requests.get(server.url + "/metrics", timeout=10).text
    m = re.search(r'^taskmoe_sentences_total\{task="%s"\} (\S+)$' % task, text, re.M)
    return float(m.group(1)) if m else 0.0


class Nginx(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if not nginx:
            raise RuntimeError("nginx not found: scripts/install-deps.sh installs it")
        cls.tmp = tempfile.mkdtemp(prefix="taskmoe-nginx-")
        os.chmod(cls.tmp, 0o755)  # nginx's workers run as nobody when the test runs as root
        common = ["--checkpoint", ARGS.checkpoint, "--threads", "1"]
        cls.a = Server(ARGS.server, common + ["--tasks", ",".join(TASKS_A)])
        cls.b = Server(ARGS.server, common + ["--tasks", ",".join(TASKS_B)])
        cls.port = free_port()
        subprocess.run([sys.executable, NGINX_CONF, "--listen", "127.0.0.1:%d" % cls.port, "--dir", cls.tmp,
                        "--route", "de,fr=127.0.0.1:%d" % cls.a.port,
                        "--route", "en,es,ru=127.0.0.1:%d" % cls.b.port], check=True, stdout=subprocess.DEVNULL)
        for root, dirs, files in os.walk(cls.tmp):
            for name in dirs + files:
                os.chmod(os.path.join(root, name), 0o755)
        conf = os.path.join(cls.tmp, "nginx.conf")
        check = subprocess.run([nginx, "-t", "-p", cls.tmp, "-c", conf], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError("nginx -t failed:\n" + check.stderr)
        cls.nginx = subprocess.Popen([nginx, "-p", cls.tmp, "-c", conf, "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        cls.url = "http://127.0.0.1:%d" % cls.port

        def up():
            try:
                return requests.get(cls.url + "/languages", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        if not wait_until(up, 20):
            cls.tearDownClass()
            raise RuntimeError("nginx did not come up")

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "nginx", None) and cls.nginx.poll() is None:
            cls.nginx.terminate()
            cls.nginx.wait(10)
        for s in (cls.a, cls.b):
            s.kill()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def direct(self, task, q):
        s = self.a if task in TASKS_A else self.b
        src, tgt = task.split("-")
        r = requests.post(s.url + "/translate", json={"q": q, "source": src, "target": tgt}, timeout=60)
        self.assertEqual(r.status_code, 200, r.text)
        return r.json()["translatedText"]

    def test_1_every_task_routed_by_target_language(self):
        for task in TASKS_A + TASKS_B:
            src, tgt = task.split("-")
            owner, other = (self.a, self.b) if task in TASKS_A else (self.b, self.a)
            before_owner, before_other = sentences(owner, task), sentences(other, task)
            with self.subTest(task=task, body="json"):
                r = requests.post(self.url + "/translate", json={"q": LINE[src], "source": src, "target": tgt},
                                  timeout=60)
                self.assertEqual(r.status_code, 200, r.text)
                self.assertEqual(r.json()["translatedText"], self.direct(task, LINE[src]))
            with self.subTest(task=task, body="form"):
                r = requests.post(self.url + "/translate", data={"q": LINE[src], "source": src, "target": tgt},
                                  timeout=60)
                self.assertEqual(r.status_code, 200, r.text)
            with self.subTest(task=task, body="query"):
                r = requests.post(self.url + "/translate", params={"q": LINE[src], "source": src, "target": tgt},
                                  timeout=60)
                self.assertEqual(r.status_code, 200, r.text)
            # nginx sent all three to the server of that target (the direct call counts once more).
            self.assertEqual(sentences(owner, task) - before_owner, 4)
            self.assertEqual(sentences(other, task) - before_other, 0)

    def test_2_languages_are_merged(self):
        r = requests.get(self.url + "/languages", timeout=10)
        self.assertEqual(r.status_code, 200)
        self.assertTrue(r.headers["Content-Type"].startswith("application/json"))
        langs = {l["code"]: l["targets"] for l in r.json()}
        self.assertEqual(langs["en"], ["de", "es", "fr", "ru"])
        self.assertEqual(langs["de"], ["en"])
        # Each server alone knows only its part.
        a = {l["code"]: l["targets"] for l in requests.get(self.a.url + "/languages", timeout=10).json()}
        self.assertEqual(a["en"], ["de", "fr"])

    def test_3_page_errors_and_unknown_targets(self):
        r = requests.get(self.url + "/", timeout=10)
        self.assertEqual(r.status_code, 200)
        self.assertIn("<textarea", r.text)
        r = requests.post(self.url + "/translate", json={"q": "x", "source": "en", "target": "xx"}, timeout=10)
        self.assertEqual(r.status_code, 400)
        self.assertEqual(r.json()["error"], "xx is not supported")
        r = requests.post(self.url + "/translate", data=b"{broken", headers={"Content-Type": "application/json"},
                          timeout=10)
        self.assertEqual(r.status_code, 400)
        self.assertIn("not valid JSON", r.json()["error"])

    def test_4_concurrent_clients_through_nginx(self):
        jobs = [(TASKS_A + TASKS_B)[i % 8] for i in range(32)]
        want = {t: self.direct(t, LINE[t[:2]]) for t in set(jobs)}

        def one(task):
            src, tgt = task.split("-")
            r = requests.post(self.url + "/translate", json={"q": LINE[src], "source": src, "target": tgt},
                              timeout=60)
            return r.status_code, r.json().get("translatedText")

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            for task, (status, text) in zip(jobs, pool.map(one, jobs)):
                self.assertEqual((status, text), (200, want[task]), task)

    def test_5_a_server_down_gives_json_503_for_its_languages_only(self):
        self.assertEqual(self.a.stop(), 0)
        r = requests.post(self.url + "/translate", json={"q": LINE["en"], "source": "en", "target": "de"}, timeout=30)
        self.assertEqual(r.status_code, 503, r.text)
        self.assertIn("unavailable", r.json()["error"])
        r = requests.post(self.url + "/translate", json={"q": LINE["en"], "source": "en", "target": "es"}, timeout=30)
        self.assertEqual(r.status_code, 200, r.text)


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True)
    p.add_argument("--checkpoint", required=True)
    ARGS, rest = p.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
