"""Every third-party module the code imports is declared in pyproject.toml: the library's
own imports as runtime dependencies, the examples' and benchmarks' as runtime
dependencies or an optional extra. Scans the source, so adding an undeclared import fails."""
import ast
import importlib.metadata
import os
import re
import sys

import pytest

tomllib = pytest.importorskip("tomllib")        # Python 3.11+

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def normalise(name):
    """A distribution name in PEP 503 form: "Scikit_Learn" -> "scikit-learn"."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement):
    """ "numpy>=1.24" -> "numpy" (the name before any version, extra or marker)."""
    return normalise(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip()).group(0))


def declared():
    """(runtime distribution names, names in any optional extra) from pyproject.toml."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    runtime = {requirement_name(r) for r in project.get("dependencies", [])}
    extras = {requirement_name(r) for group in project.get("optional-dependencies", {}).values()
              for r in group}
    return runtime, extras


def imported_top_level(source):
    """Top-level names of absolute imports in Python source (relative ones are the package's)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def third_party_imports(folder):
    """{top-level module: [files importing it]} for the .py files under ROOT/folder, leaving
    out the standard library, tinycnn itself and the folder's own modules (e.g. common.py)."""
    base = os.path.join(ROOT, folder)
    local = {"tinycnn"}
    found = {}
    for dirpath, _, files in os.walk(base):
        local.update(f[:-3] for f in files if f.endswith(".py"))
        for f in files:
            if f.endswith(".py"):
                with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                    for name in imported_top_level(fh.read()):
                        found.setdefault(name, []).append(os.path.relpath(os.path.join(dirpath, f), ROOT))
    return {m: files for m, files in found.items()
            if m not in sys.stdlib_module_names and m not in local}


def distributions(module):
    """The distributions that provide an importable top-level module ("PIL" -> {"pillow"});
    a module that is not installed is taken to be its own distribution's name."""
    provided = importlib.metadata.packages_distributions().get(module)
    return {normalise(d) for d in provided} if provided else {normalise(module)}


def undeclared(folder, allowed):
    return sorted(f"{module} (imported by {', '.join(sorted(files))})"
                  for module, files in third_party_imports(folder).items()
                  if not distributions(module) & allowed)


def test_the_library_declares_every_import_as_a_runtime_dependency():
    runtime, _ = declared()
    assert "pillow" in runtime              # imported directly by preprocess.py and sketch.py
    assert undeclared("tinycnn", runtime) == []


def test_torch_stays_optional():
    runtime, extras = declared()
    assert "torch" not in runtime and "torch" in extras
    assert "torch" not in third_party_imports("tinycnn")


@pytest.mark.parametrize("folder", ["examples", "benchmarks"])
def test_examples_and_benchmarks_declare_their_imports(folder):
    runtime, extras = declared()
    assert undeclared(folder, runtime | extras) == []


def test_the_scan_finds_an_undeclared_import(tmp_path):
    # The checker itself: a module importing something pyproject.toml does not list is caught,
    # whether the import is plain, dotted, or inside a function; relative imports are not.
    source = ("import numpy as np\nfrom PIL import Image\nfrom . import layers\n"
              "def f():\n    import yaml.constructor\n    from skimage.io import imread\n")
    names = imported_top_level(source)
    assert names == {"numpy", "PIL", "yaml", "skimage"}
    runtime, _ = declared()
    missing = {m for m in names if not distributions(m) & runtime}
    assert missing == {"yaml", "skimage"}
