"""The type stubs (taskmoe/__init__.pyi) describe the real module: every name, every argument."""
import ast
import inspect
import os
import re

import taskmoe

STUB = os.path.join(os.path.dirname(taskmoe.__file__), "__init__.pyi")
if not os.path.exists(STUB):  # running from a source tree whose package lacks the stub
    STUB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "taskmoe", "__init__.pyi")


def stub_args(fn):
    a = fn.args
    return [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg != "self"]


def runtime_args(obj):
    try:
        return [p for p in inspect.signature(obj).parameters if p not in ("self", "options")]
    except (TypeError, ValueError):  # a pybind11 function: its signature is the docstring's first line
        first = obj.__doc__.split("\n", 1)[0]
        inner = first[first.index("(") + 1:first.rindex(")")]
        names = re.findall(r"(?:^|, )(\*|\w+)(?=: |, |$)", inner)
        return [n for n in names if n not in ("*", "self")]


def test_every_stub_name_exists_with_the_same_arguments():
    tree = ast.parse(open(STUB, encoding="utf-8").read())
    checked = 0
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            cls = getattr(taskmoe, node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    if item.name.startswith("__") and item.name != "__init__":
                        assert hasattr(cls, item.name), (node.name, item.name)
                        continue
                    member = getattr(cls, item.name)
                    if isinstance(member, property):
                        continue
                    if item.name == "__init__" and not stub_args(item):
                        continue
                    if any(isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list):
                        continue
                    assert runtime_args(member) == [a for a in stub_args(item) if a != "options"], \
                        (node.name, item.name)
                    checked += 1
        elif isinstance(node, ast.FunctionDef):
            assert runtime_args(getattr(taskmoe, node.name)) == stub_args(node), node.name
            checked += 1
        elif isinstance(node, ast.AnnAssign):
            assert hasattr(taskmoe, node.target.id), node.target.id
    assert checked >= 12


def stub_defaults(fn):
    a = fn.args
    out = {}
    positional = a.posonlyargs + a.args
    for arg, d in zip(positional[len(positional) - len(a.defaults):], a.defaults):
        out[arg.arg] = ast.literal_eval(d)
    for arg, d in zip(a.kwonlyargs, a.kw_defaults):
        if d is not None:
            out[arg.arg] = ast.literal_eval(d)
    return out


def runtime_defaults(obj):
    first = obj.__doc__.split("\n", 1)[0]
    return {name: ast.literal_eval(value) for name, value in
            re.findall(r"(\w+): [\w\[\]., ]*? = ('[^']*'|[^,)]+)", first)}


def test_stub_defaults_are_the_runtime_defaults():
    tree = ast.parse(open(STUB, encoding="utf-8").read())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Translator")
    compared = 0
    for item in cls.body:
        if isinstance(item, ast.FunctionDef) and item.name in (
                "translate_batch", "translate_batch_tokens", "score_batch", "score_batch_tokens"):
            expected = runtime_defaults(getattr(taskmoe.Translator, item.name))
            assert stub_defaults(item) == expected, item.name
            compared += len(expected)
    assert compared > 30


def test_every_public_name_has_a_stub():
    tree = ast.parse(open(STUB, encoding="utf-8").read())
    names = {getattr(n, "name", None) or getattr(getattr(n, "target", None), "id", None) for n in tree.body}
    assert set(taskmoe.__all__) <= names
