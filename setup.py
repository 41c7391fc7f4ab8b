"""Builds the taskmoe Python package: `pip install --no-build-isolation .` (docs/python.md).

The extension is the header-only runtime in one translation unit (python/src/taskmoe_module.cpp),
compiled with what the CMake target taskmoe::taskmoe uses in a Release build: C++17, -O3
-DNDEBUG, TASKMOE_HAS_ONEDNN=1 + libdnnl and TASKMOE_HAS_SENTENCEPIECE=1 + sentencepiece (from
pkg-config, as CMakeLists.txt finds it), Eigen from pkg-config, pthreads. As in CMake, both
backends are on by default and a missing one is an error, not a silently different runtime;
switch one off with TASKMOE_WITH_ONEDNN=0 / TASKMOE_WITH_SENTENCEPIECE=0 in the environment.
TASKMOE_WARNINGS_AS_ERRORS=1 adds -Werror (scripts/test.sh).
"""
import os
import re
import shlex
import subprocess
import sys

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def version():
    text = open(os.path.join(HERE, "include", "taskmoe", "version.hpp"), encoding="utf-8").read()
    return ".".join(re.search(r"#define TASKMOE_VERSION_%s (\d+)" % p, text).group(1)
                    for p in ("MAJOR", "MINOR", "PATCH"))


def flag(name, default):
    v = os.environ.get(name, default)
    if v.upper() in ("1", "ON", "TRUE", "YES"):
        return True
    if v.upper() in ("0", "OFF", "FALSE", "NO"):
        return False
    sys.exit("setup.py: %s must be 0 or 1, got %r" % (name, v))


def pkg_config(package, *args, required=True, hint=""):
    try:
        out = subprocess.run(["pkg-config", *args, package], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        if required:
            sys.exit("setup.py: %s was not found via pkg-config. %s" % (package, hint))
        return None
    return shlex.split(out)


def find_header(relative, dirs=("/usr/include", "/usr/local/include")):
    extra = [d for d in os.environ.get("CPATH", "").split(":") if d]
    return next((d for d in extra + list(dirs) if os.path.exists(os.path.join(d, relative))), None)


def extension():
    import pybind11  # Debian's python3-pybind11; with --no-build-isolation it is the system one

    include_dirs = [os.path.join("include"), pybind11.get_include()]
    defines = [("NDEBUG", None)]
    libraries = []
    compile_args = ["-std=c++17", "-O3", "-g0", "-fvisibility=hidden", "-Wall", "-Wextra"]
    link_args = ["-pthread"]
    # GCC 12 at -O3 reports a false -Wnonnull inside std::vector's copy assignment inlined from
    # the translator (examples/CMakeLists.txt silences it the same way).
    compile_args.append("-Wno-nonnull")
    if flag("TASKMOE_WARNINGS_AS_ERRORS", "0"):
        compile_args.append("-Werror")

    for package, hint in (("eigen3", "Install libeigen3-dev (scripts/install-deps.sh)."),):
        for f in pkg_config(package, "--cflags", hint=hint):
            if f.startswith("-I"):
                include_dirs.append(f[2:])
    for header, hint in (("xsimd/xsimd.hpp", "libxsimd-dev"), ("nlohmann/json.hpp", "nlohmann-json3-dev")):
        if find_header(header) is None:
            sys.exit("setup.py: %s not found: install %s (scripts/install-deps.sh)" % (header, hint))

    if flag("TASKMOE_WITH_ONEDNN", "1"):
        if find_header(os.path.join("oneapi", "dnnl", "dnnl.hpp")) is None:
            sys.exit("setup.py: TASKMOE_WITH_ONEDNN is on but oneDNN was not found. Install it "
                     "(scripts/install-deps.sh, Debian package libdnnl-dev) or set "
                     "TASKMOE_WITH_ONEDNN=0 to use the portable GEMM fallback.")
        defines.append(("TASKMOE_HAS_ONEDNN", "1"))
        libraries.append("dnnl")
    if flag("TASKMOE_WITH_SENTENCEPIECE", "1"):
        hint = ("TASKMOE_WITH_SENTENCEPIECE is on: install libsentencepiece-dev "
                "(scripts/install-deps.sh) or set TASKMOE_WITH_SENTENCEPIECE=0.")
        for f in pkg_config("sentencepiece", "--cflags", hint=hint):
            if f.startswith("-I"):
                include_dirs.append(f[2:])
        for f in pkg_config("sentencepiece", "--libs", hint=hint):
            if f.startswith("-l"):
                libraries.append(f[2:])
            elif f.startswith("-L"):
                link_args.append(f)
        defines.append(("TASKMOE_HAS_SENTENCEPIECE", "1"))

    return Extension(
        "taskmoe._taskmoe",
        sources=[os.path.join("python", "src", "taskmoe_module.cpp")],
        include_dirs=include_dirs,
        define_macros=defines,
        libraries=libraries,
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        language="c++",
        # Any header change must rebuild the one translation unit.
        depends=[os.path.join(root, f) for root, _, files in os.walk(os.path.join("include", "taskmoe"))
                 for f in files],
    )


setup(
    version=version(),
    package_dir={"": "python"},
    packages=["taskmoe"],
    package_data={"taskmoe": ["__init__.pyi", "py.typed"]},
    ext_modules=[extension()],
    # Keep setuptools' intermediate files beside the CMake build folders (build/ is gitignored).
    options={"build": {"build_base": os.path.join("build", "setuptools")}},
    zip_safe=False,
)
