"""The walkthrough in docs/ runs as written, and the exercises' checker works.

Convention for every docs/*.md file (new chapters are picked up automatically):
- every ```python block runs, in order, in one fresh namespace per file, with the current
  folder set to a temporary one;
- a ```python block followed directly by a ```text block must print exactly that text
  (trailing whitespace of each line stripped; the whole block is compared).

Run one chapter and see what each block prints:  python tests/test_docs.py docs/05-conv2d.md
"""
import contextlib
import os
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinycnn

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXERCISES = DOCS / "exercises"
CHAPTERS = sorted(DOCS.glob("*.md"))

# A python block, optionally followed (blank lines only in between) by a text block.
BLOCK = re.compile(r"^```python\n(.*?)^```\n(?:\s*^```text\n(.*?)^```\n)?", re.S | re.M)


def code_blocks(path):
    """[(line number, code, expected output or None)] for every python block in path."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1), m.group(2))
            for m in BLOCK.finditer(text)]


def normalise(text):
    return "\n".join(line.rstrip() for line in text.strip("\n").split("\n"))


@contextlib.contextmanager
def global_state_restored():
    """Chapters may switch the backend or numpy's print options, or register a layer type
    (docs/api.md); put them back."""
    backend, printoptions = tinycnn.get_backend(), np.get_printoptions()
    layer_types = dict(tinycnn.layers.LAYER_TYPES)
    try:
        yield
    finally:
        tinycnn.set_backend(backend)
        np.set_printoptions(**printoptions)
        tinycnn.layers.LAYER_TYPES.clear()
        tinycnn.layers.LAYER_TYPES.update(layer_types)


def run_chapter(path, on_block):
    """Run every python block of `path` in one namespace; on_block(line, expected, printed)."""
    namespace = {"__name__": f"docs.{path.stem}"}
    with global_state_restored():
        for line, code, expected in code_blocks(path):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                # Leading newlines keep traceback line numbers equal to the file's.
                exec(compile("\n" * (line - 1) + code, str(path), "exec"), namespace)
            on_block(line, expected, out.getvalue())


def test_every_chapter_is_in_the_reading_order():
    order = (DOCS / "README.md").read_text()
    missing = [p.name for p in CHAPTERS if p.name != "README.md" and f"({p.name})" not in order]
    assert len(CHAPTERS) >= 10 and not missing, f"add {missing} to the reading order in docs/README.md"


def check_chapter(path):
    """Run a chapter; fail on the first block whose output differs from its text block."""
    def compare(line, expected, printed):
        if expected is not None:
            assert normalise(printed) == normalise(expected), \
                f"{path.name}: the block at line {line} printed\n{printed}"
    run_chapter(path, compare)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_runs_and_prints_what_it_says(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_chapter(path)


def test_the_harness_catches_a_wrong_output_and_shares_one_namespace(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```python\nx = 2\n```\n\ntext\n\n```python\nprint(x + 1)   \n```\n\n"
                    "```text\n3\n```\n")
    check_chapter(page)
    page.write_text(page.read_text().replace("\n3\n", "\n4\n"))
    with pytest.raises(AssertionError, match="line 8 printed"):
        check_chapter(page)


def documented_names():
    """Every section heading (## or ###) of every chapter, as one string."""
    return "\n".join(line for path in CHAPTERS for line in path.read_text().splitlines()
                     if line.startswith("#"))


@pytest.mark.parametrize("name", sorted(tinycnn.layers.LAYER_TYPES) + ["SoftmaxCrossEntropy"])
def test_every_layer_type_and_the_loss_has_a_section(name):
    assert re.search(rf"^#+ .*\b{name}\b", documented_names(), re.M), \
        f"no section heading in docs/*.md names {name}: add one where it is explained"


def test_numeric_gradient_needs_a_float64_array_it_can_perturb():
    from tinycnn.gradcheck import numeric_gradient
    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(numeric_gradient(lambda: float(np.sum(x ** 3)), x), [3, 12], rtol=1e-8)
    with pytest.raises(TypeError, match="C-contiguous float64 array .* float32"):
        numeric_gradient(lambda: 0.0, x.astype(np.float32))


# -- the exercises' checker ----------------------------------------------------------------
from tinycnn import exercises  # noqa: E402

STUBS = sorted(EXERCISES.glob("*.py"))


def check(path):
    """Run the checker in-process: (exit status, what it printed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = exercises.main([str(path)])
    return status, out.getvalue()


def test_every_exercise_has_a_stub_and_a_solution():
    assert sorted(p.stem for p in STUBS) == sorted(exercises.EXERCISES)
    assert sorted(p.stem for p in (EXERCISES / "solutions").glob("*.py")) == sorted(exercises.EXERCISES)


@pytest.mark.parametrize("name", sorted(exercises.EXERCISES))
def test_worked_solution_passes(name):
    status, out = check(EXERCISES / "solutions" / f"{name}.py")
    assert status == 0, out
    assert "FAIL" not in out and out.count("PASS") == 3 * len(exercises.EXERCISES[name].outputs)
    assert out.rstrip().endswith("all checks passed")


@pytest.mark.parametrize("name", sorted(exercises.EXERCISES))
def test_stub_fails_cleanly(name):
    status, out = check(EXERCISES / f"{name}.py")
    assert status == 1
    assert "not written yet" in out and "Traceback" not in out


def wrong_version(tmp_path, name, old, new):
    """The worked solution with one line changed, saved under the exercise's own name."""
    source = (EXERCISES / "solutions" / f"{name}.py").read_text()
    assert old in source, f"{old!r} not in the {name} solution"
    path = tmp_path / f"{name}.py"
    path.write_text(source.replace(old, new, 1))
    return path


@pytest.mark.parametrize("name, old, new, wrong_array", [
    ("dense_backward", "dy.sum(axis=0)", "dy.mean(axis=0)", "db"),
    ("conv2d_backward", "dW[f] +=", "dW[f] -=", "dW"),
    ("maxpool2d_backward", "dx[n, c, i0 + i, j0 + j] += ", "dx[n, c, i0 + i, j0 + j] = 0.5 * ", "dx"),
    ("batchnorm_backward", "dxc += dvar * 2 * xc / N", "pass", "dx"),
    ("sigmoid_backward", "return dy * s * (1 - s)", "return dy * s", "dx"),
    ("softmax_cross_entropy_backward", "(p - onehot) / N", "p - onehot", "dlogits"),
    ("avgpool2d_backward", "/ kernel**2", "/ kernel", "dx"),
    ("winograd_conv2d_backward", "BT.T @ dV @ BT", "BT @ dV @ BT.T", "dx"),     # B^T's transpose
])
def test_a_wrong_solution_fails_naming_the_array(tmp_path, name, old, new, wrong_array):
    status, out = check(wrong_version(tmp_path, name, old, new))
    assert status == 1
    assert re.search(rf"^\s*FAIL {wrong_array}\b", out, re.M), out
    assert re.search(rf"^\s*[1-9][0-9]* of [1-9][0-9]* elements differ; worst at {wrong_array}\[[0-9, ]+\]: "
                     r"yours \S+, tinycnn's \S+$", out, re.M), out
    assert "Traceback" not in out


@pytest.mark.parametrize("name, old, new, says", [
    ("dense_backward", "dy.sum(axis=0)", "dy.mean(axis=0)", "yours is 0.5 x tinycnn's everywhere: right but for a constant"),
    ("softmax_cross_entropy_backward", "(p - onehot) / N", "p - onehot", "yours is 2 x tinycnn's everywhere"),
    ("conv2d_backward", "dW[f] +=", "dW[f] -=", "yours is -1 x tinycnn's everywhere: right but for the sign"),
    ("batchnorm_backward", "dxc += dvar * 2 * xc / N", "pass", None),
    ("sigmoid_backward", "return dy * s * (1 - s)", "return dy * s", None),
    ("avgpool2d_backward", "/ kernel**2", "/ kernel", "yours is 2 x tinycnn's everywhere: right but for a constant "
     "factor (a window's mean divides by its area, kernel * kernel: a /kernel, or no division?)"),
])
def test_a_wrong_scale_is_named_as_one(tmp_path, name, old, new, says):
    """A constant factor (case 1 has N = 2) is named; other mistakes get no such line."""
    status, out = check(wrong_version(tmp_path, name, old, new))
    assert status == 1
    if says is None:
        assert "everywhere" not in out, out
    else:
        assert says in out, out


def test_an_assignment_where_overlaps_add_up_is_pointed_at(tmp_path):
    """`=` for `+=` passes the cases without overlaps: the failing cases say they overlap, and
    how many elements are wrong (a few, not all)."""
    for name, old, new in [("maxpool2d_backward", "dx[n, c, i0 + i, j0 + j] += ", "dx[n, c, i0 + i, j0 + j] = "),
                           ("winograd_conv2d_backward", "dx[n, :, rows, cols] +=", "dx[n, :, rows, cols] =")]:
        status, out = check(wrong_version(tmp_path, name, old, new))
        cases = re.split(r"^case \d+: ", out, flags=re.M)[1:]
        assert status == 1 and len(cases) == 3, out
        for case in cases:
            overlapping = "overlap" in case.splitlines()[0]
            assert ("FAIL" in case) == overlapping, (name, case)
            if overlapping:
                wrong, total = map(int, re.search(r"(\d+) of (\d+) elements differ", case).groups())
                assert 0 < wrong < total, case


def test_the_copy_command_copies_the_stubs_once_and_keeps_answers(tmp_path):
    """The command every exercise gives, run twice as a learner would (once per chapter):
    the stubs land flat in the folder, without the solutions, and a filled-in one is kept
    (`cp -r` had copied the solutions, then nested a second copy inside the first)."""
    command = "mkdir -p ~/tinycnn-exercises && cp -n docs/exercises/*.py ~/tinycnn-exercises/"
    for where in [ROOT / "README.md", ROOT / "docs" / "README.md", ROOT / "docs" / "02-dense.md",
                  *sorted(EXERCISES.glob("*.py"))]:
        assert command in where.read_text(), where
    env = {**os.environ, "HOME": str(tmp_path)}
    subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, check=True)
    mine = tmp_path / "tinycnn-exercises" / "dense_backward.py"
    mine.write_text("# my answer\n")
    subprocess.run(["bash", "-c", command], cwd=ROOT, env=env)      # (-n: status differs by coreutils)
    assert sorted(p.name for p in (tmp_path / "tinycnn-exercises").iterdir()) == \
        sorted(p.name for p in EXERCISES.glob("*.py")) == sorted(f"{name}.py" for name in exercises.EXERCISES)
    assert mine.read_text() == "# my answer\n"


def test_wrong_shape_and_exceptions_are_one_line_each(tmp_path):
    path = wrong_version(tmp_path, "dense_backward", "return dx, dW, db", "return dx, dW.T, db")
    status, out = check(path)
    assert status == 1 and re.search(r"FAIL dW: .*shape \(4, 3\).*expected \(3, 4\)", out), out
    path.write_text("def dense_backward(x, W, b, dy):\n    return x[10]\n")
    status, out = check(path)
    assert status == 1 and "IndexError" in out and "line 2" in out and "Traceback" not in out
    path.write_text("def dense_backward(x, W, b, dy):\n    dx = dy @ W.T\n")   # no return
    status, out = check(path)
    assert status == 1 and "FAIL dx: the function returned None (is a `return` missing?)" in out
    path.write_text("def dense_backward(x, W, b, dy):\n    return dy @ W.T, x.T @ dy\n")
    status, out = check(path)
    assert status == 1 and "must return dx, dW, db" in out and "it returned 2 values" in out


def test_checker_command_line():
    """The one command a learner runs, as a learner runs it."""
    cmd = [sys.executable, "-m", "tinycnn.exercises"]
    ok = subprocess.run(cmd + [str(EXERCISES / "solutions" / "dense_backward.py")],
                        capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.rstrip().endswith("all checks passed")


def test_checker_says_which_file_it_cannot_use(tmp_path, capsys):
    assert exercises.main([str(tmp_path / "no_such_exercise.py")]) == 2
    assert "no_such_exercise.py: not an exercise name" in capsys.readouterr().err
    assert exercises.main([str(tmp_path / "dense_backward.py")]) == 2
    assert "dense_backward.py: no such file (the stub to copy and fill in is docs/exercises/dense_backward.py)" \
        in capsys.readouterr().err
    assert exercises.main(["dense_backward"]) == 2                     # the name alone
    assert capsys.readouterr().err == ("python -m tinycnn.exercises: error: dense_backward: no such file (the stub to copy and fill in is "
                                       "docs/exercises/dense_backward.py)\n")
    (tmp_path / "sigmoid_backward.py").write_text("def sigmoid_backward(x, dy):\n    return (\n")
    assert exercises.main([str(tmp_path / "sigmoid_backward.py")]) == 1
    assert "could not load" in capsys.readouterr().out
    (tmp_path / "sigmoid_backward.py").write_text("def sigmoid(x, dy):\n    return dy\n")
    assert exercises.main([str(tmp_path / "sigmoid_backward.py")]) == 1
    assert "defines no function sigmoid_backward" in capsys.readouterr().out


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        def show(line, expected, printed):
            print(f"--- {arg}, block at line {line}" + ("" if expected is None else " (checked)"))
            print(printed, end="")
        run_chapter(Path(arg), show)
