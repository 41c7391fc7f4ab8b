#!/usr/bin/python3
"""The web page at `/` in a real browser: Debian's chromium, headless, driven by chromedriver
through python3-selenium. Type, pick languages, click, read the result; it must equal the API's
answer. Fails (never skips) when the browser cannot start: the page is part of the product.

  tests/server/browser_test.py --server build/x/tools/taskmoe-server --checkpoint models/demo
"""

import argparse
import os
import shutil
import sys
import tempfile
import unittest

import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_util import Server  # noqa: E402

ARGS = None


def find(*names):
    for n in names:
        p = shutil.which(n) or (n if os.path.isabs(n) and os.path.exists(n) else None)
        if p:
            return p
    raise RuntimeError("none of %s found: scripts/install-deps.sh installs chromium and chromium-driver" % (names,))


class Page(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(ARGS.server, ["--checkpoint", ARGS.checkpoint, "--threads", "1",
                                          "--tasks", "en-de,en-fr,de-en,ru-en"])
        cls.profile = tempfile.mkdtemp(prefix="taskmoe-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = find("chromium", "/usr/bin/chromium")
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--no-first-run", "--user-data-dir=" + cls.profile]:
            opts.add_argument(a)
        try:
            cls.driver = webdriver.Chrome(service=Service(find("chromedriver", "/usr/bin/chromedriver")), options=opts)
        except Exception:
            cls.server.kill()
            raise
        cls.driver.set_page_load_timeout(30)

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        shutil.rmtree(cls.profile, ignore_errors=True)
        assert cls.server.stop() == 0, cls.server.text_log()

    def open(self):
        d = self.driver
        d.get(self.server.url + "/")
        WebDriverWait(d, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        return d

    def api(self, q, source, target):
        r = requests.post(self.server.url + "/translate", json={"q": q, "source": source, "target": target}, timeout=60)
        self.assertEqual(r.status_code, 200, r.text)
        return r.json()["translatedText"]

    def translate_in_page(self, text, source, target):
        d = self.driver
        Select(d.find_element(By.ID, "source")).select_by_value(source)
        Select(d.find_element(By.ID, "target")).select_by_value(target)
        box = d.find_element(By.ID, "q")
        box.clear()
        box.send_keys(text)
        d.execute_script("document.getElementById('result').textContent = ''")
        d.find_element(By.ID, "translate").click()
        WebDriverWait(d, 30).until(
            lambda d: d.find_element(By.ID, "result").text or d.find_element(By.ID, "status").text)
        self.assertEqual(d.find_element(By.ID, "status").text, "")
        return d.find_element(By.ID, "result").text

    def test_languages_fill_the_selects(self):
        d = self.open()
        sources = [o.get_attribute("value") for o in Select(d.find_element(By.ID, "source")).options]
        self.assertEqual(sorted(sources), ["de", "en", "ru"])  # fr is only a target here
        Select(d.find_element(By.ID, "source")).select_by_value("en")
        targets = [o.get_attribute("value") for o in Select(d.find_element(By.ID, "target")).options]
        self.assertEqual(targets, ["de", "fr"])
        names = [o.text for o in Select(d.find_element(By.ID, "source")).options]
        self.assertIn("English", names)

    def test_type_click_read(self):
        self.open()
        text = "Could not open the file."
        self.assertEqual(self.translate_in_page(text, "en", "de"), self.api(text, "en", "de"))
        text = "Сохранить настройки"
        self.assertEqual(self.translate_in_page(text, "ru", "en"), self.api(text, "ru", "en"))
        # Two lines in the box: each translated, joined by a newline (what the API does).
        lines = ["Show hidden files", "The printer is not connected."]
        got = self.translate_in_page("\n".join(lines), "en", "fr")
        self.assertEqual(got, self.api("\n".join(lines), "en", "fr"))
        self.assertEqual(got.count("\n"), 1)

    def test_swap_and_errors(self):
        d = self.open()
        Select(d.find_element(By.ID, "source")).select_by_value("en")
        Select(d.find_element(By.ID, "target")).select_by_value("de")
        d.find_element(By.ID, "swap").click()
        self.assertEqual(Select(d.find_element(By.ID, "source")).first_selected_option.get_attribute("value"), "de")
        self.assertEqual(Select(d.find_element(By.ID, "target")).first_selected_option.get_attribute("value"), "en")
        # An empty box: the server's 400 message is shown, no result.
        d.find_element(By.ID, "q").clear()
        d.find_element(By.ID, "translate").click()
        WebDriverWait(d, 20).until(lambda d: d.find_element(By.ID, "status").text)
        self.assertIn("missing q", d.find_element(By.ID, "status").text)


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True)
    p.add_argument("--checkpoint", required=True)
    ARGS, rest = p.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
