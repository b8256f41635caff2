"""benchmarks/bench_step_parts.py --torch profiles PyTorch's twin operator by operator, so
its rows must name the twin's layers by their real shapes, per step."""
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_step_parts import torch_worker  # noqa: E402


def test_torch_worker_profiles_the_twins_convolutions(tmp_path):
    result = torch_worker("fastnet", 8, 2, str(tmp_path / "no-mnist-here"), "default")
    assert result["data"].startswith("random images")
    assert result["wall_ms"] > 0
    shapes = {(op["op"], op["shapes"]) for op in result["ops"]}
    assert ("aten::mkldnn_convolution", "[8, 24, 12, 12], [32, 24, 5, 5], [32]") in shapes
    assert any(op == "aten::convolution_backward" and s.startswith("[8, 32, 8, 8]") for op, s in shapes)
    assert all(op["ms"] > 0 for op in result["ops"])
    assert [op["ms"] for op in result["ops"]] == sorted((op["ms"] for op in result["ops"]), reverse=True)
