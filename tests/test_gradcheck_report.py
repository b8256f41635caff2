"""The gradient-check report: every layer type, the loss and a model pass on every backend;
a deliberately broken layer gets a failing row naming it and the wrong array."""
import importlib.util
from pathlib import Path

import numpy as np

from tinycnn.backend import BACKENDS
from tinycnn.gradcheck import REPORT_FOOTER, ReportCase, gradcheck_report
from tinycnn.layers import LAYER_TYPES, Dense

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gradcheck_report.py"


def test_every_layer_type_the_loss_and_a_model_pass_on_every_backend():
    printed = []
    rows = gradcheck_report(print_fn=printed.append)
    assert [r for r in rows if not r.passed] == []
    assert {r.backend for r in rows} == set(BACKENDS)
    for backend in BACKENDS:
        labels = {r.layer.split()[0] for r in rows if r.backend == backend}
        assert set(LAYER_TYPES) | {"SoftmaxCrossEntropy", "model"} <= labels, backend
    worst = max(r.error for r in rows)
    assert 0 < worst < 1e-6
    text = printed[0]
    assert f"{len(rows)} arrays checked, 0 failed" in text and text.endswith(REPORT_FOOTER)
    conv_w = [line for line in text.splitlines() if line.startswith("Conv2D 3x3 relu pad 1") and "  W  " in line]
    assert len(conv_w) == len(BACKENDS) and all(line.endswith("pass") for line in conv_w)


class BiasDroppingDense(Dense):
    """Forgets to write the bias gradient: grads["b"] stays zero."""

    def backward(self, dy):
        x = self._cached()
        self.grads["W"][...] = x.T @ dy
        return dy @ self.params["W"].T


class TransposingDense(Dense):
    """dx = dy @ W instead of dy @ W.T (W is square here, so the shapes do not give it away)."""

    def backward(self, dy):
        super().backward(dy)
        return dy @ self.params["W"]


def test_a_broken_layer_gets_a_failing_row_naming_it_and_the_array():
    rng = np.random.default_rng(0)
    cases = []
    for cls in (BiasDroppingDense, TransposingDense, Dense):
        layer = cls(4, 4)
        layer.reset_parameters(rng)
        cases.append(ReportCase(cls.__name__, layer, rng.standard_normal((3, 4))))
    printed = []
    rows = gradcheck_report(["numpy"], cases=cases, print_fn=printed.append)
    failed = {(r.layer, r.array) for r in rows if not r.passed}
    assert failed == {("BiasDroppingDense", "b"), ("TransposingDense", "x")}
    assert all(r.error > 1e-2 for r in rows if not r.passed)
    assert "2 arrays checked" not in printed[0] and "9 arrays checked, 2 failed" in printed[0]
    assert "  FAIL numpy: BiasDroppingDense b 1.0e+00 at [" in printed[0]


def test_example_script_prints_the_report_and_exits_zero(capsys):
    spec = importlib.util.spec_from_file_location("gradcheck_report_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--backend", "numpy", "--backend", "loops"]) == 0
    out = capsys.readouterr().out
    assert "backend 'numpy'" in out and "backend 'loops'" in out and "backend 'numba'" not in out
    assert "0 failed" in out and "How to read it." in out
