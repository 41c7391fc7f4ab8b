"""Shared fixtures of the Python tests (run: scripts/test.sh, or docs/python.md#testing).

The tests import the installed `taskmoe` package (pip install, or PYTHONPATH=<cmake build>/python).
The CLI comparison needs taskmoe-translate and taskmoe-convert: TASKMOE_TRANSLATE / TASKMOE_CONVERT
name them, otherwise the first build/*/ that has them is used. With TASKMOE_REQUIRE_ALL=1
(scripts/test.sh) a missing binary fails the test instead of skipping it.
"""
import glob
import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "models", "demo")
FIXTURES = os.path.join(ROOT, "tests", "data", "fixtures")

import taskmoe  # noqa: E402  (after ROOT: the error message below names it)

# Sentences of the demo README plus odd input: unicode of every kind, blank, long.
SENTENCES = [
    "Could not open the file.",
    "The printer is not connected.",
    "Save the document before closing the window.",
    "Show hidden files",
    "Select a folder.",
    "",
    "   ",
    "Open file",
    "The selected printer is not available. Please choose another printer from the list.",
    "Café, naïve, Straße: ünïcödé everywhere.",
    "Emoji 🙂👍🏽 and a flag 🇩🇪 in the middle.",
    "Right-to-left: שלום עולם and مرحبا.",
    "Mixed 日本語 テキスト with Latin.",
    "Delete the selected items?",
    "The connection to the server was lost.",
    "Enter your password.",
]


def require_all():
    return os.environ.get("TASKMOE_REQUIRE_ALL") == "1"


def missing(message):
    if require_all():
        pytest.fail(message + " (TASKMOE_REQUIRE_ALL=1)")
    pytest.skip(message)


def find_binary(env, relative):
    if os.environ.get(env):
        return os.environ[env]
    hits = sorted(glob.glob(os.path.join(ROOT, "build", "*", relative)), key=os.path.getmtime, reverse=True)
    return hits[0] if hits else None


@pytest.fixture(scope="session")
def translate_cli():
    path = find_binary("TASKMOE_TRANSLATE", os.path.join("examples", "taskmoe-translate"))
    if not path or not os.access(path, os.X_OK):
        missing("taskmoe-translate not found: build it (cmake --build ... --target taskmoe-translate) "
                "or set TASKMOE_TRANSLATE")
    return path


@pytest.fixture(scope="session")
def convert_cli():
    path = find_binary("TASKMOE_CONVERT", os.path.join("tools", "taskmoe-convert"))
    if not path or not os.access(path, os.X_OK):
        missing("taskmoe-convert not found: build it or set TASKMOE_CONVERT")
    return path


@pytest.fixture(scope="session")
def demo_dir():
    if not os.path.exists(os.path.join(DEMO, "config.json")):
        missing("models/demo is not in this checkout")
    if not taskmoe.with_sentencepiece:
        missing("the module was built without SentencePiece: the text API is unavailable")
    return DEMO


@pytest.fixture(scope="session")
def demo_tmoe(demo_dir, tmp_path_factory):
    """en-de of the demo model, int8, converted by the module itself."""
    out = str(tmp_path_factory.mktemp("demo") / "en-de.tmoe")
    taskmoe.convert(demo_dir, "en-de", out)
    return out


@pytest.fixture(scope="session")
def demo(demo_tmoe):
    return taskmoe.Translator(demo_tmoe)


@pytest.fixture(scope="session")
def fixture_dir():
    def get(setup):
        d = os.path.join(FIXTURES, setup)
        if not os.path.isdir(d):
            missing("tests/data/fixtures/%s is missing" % setup)
        return d
    return get
