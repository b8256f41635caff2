"""benchmarks/bench_step_parts.py --torch profiles PyTorch's twin operator by operator, so
its rows must name the twin's layers by their real shapes, per step."""
import os
import subprocess
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


def test_torch_worker_process_leaves_numbas_threads_unstarted(tmp_path):
    # Numba's thread pool, once started (numba.get_num_threads() starts it), made the PyTorch
    # twin's steps 1.7x slower in the same process (20.3 against 12.5 ms, fastnet, batch 128):
    # the worker's command line must not start it. (A process of its own: in this one, other
    # tests have started the pool.)
    code = ("import sys; sys.argv[1:] = ['--torch-worker', 'fastnet', '4', '1', sys.argv[1], 'default']; "
            "import bench_step_parts; bench_step_parts.main(); "
            "from numba.np.ufunc import parallel; print('pool started:', parallel._is_initialized)")
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=bench, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(bench.parent), str(bench)])))
    assert out.returncode == 0, out.stderr
    assert '"wall_ms"' in out.stdout and out.stdout.rstrip().endswith("pool started: False")
