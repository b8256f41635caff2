"""benchmarks/bench_switch.py times whole models with one kernel method on and off in one
process: each half must really run with the switch as labelled, and the switch must be
left as it was."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_switch import compare  # noqa: E402

from tinycnn.kernels import fast  # noqa: E402


def test_on_runs_the_method_off_does_not_and_the_switch_is_restored(monkeypatch):
    blocked, gemm = [], []           # the switch's state at each call of either method
    for module, calls in ((fast.conv_blocked, blocked), (fast.conv_gemm, gemm)):
        real = module.forward
        monkeypatch.setattr(module, "forward",
                            lambda *args, real=real, calls=calls: calls.append(fast.conv.BLOCKED) or real(*args))
    before = fast.conv.BLOCKED
    row = compare("fastnet", "blocked", 8, 1)
    assert fast.conv.BLOCKED is before
    # fastnet's convolutions: the blocked method only with the switch on, the GEMM in its
    # place with it off (as many calls as on: on a CPU with 512-bit vectors, where a layer
    # needs conv_blocked.MIN_TAPS taps, fastnet's first layer, 25 taps, is on the GEMM either way)
    assert set(blocked) == {True} and False in gemm
    assert gemm.count(False) == gemm.count(True) + len(blocked)
    assert (True in gemm) == (fast.conv_blocked.MIN_TAPS > 25)
    assert row["train ms on"] > 0 and row["infer ms off"] > 0
    for part in ("train", "infer"):     # the median of the calls' ratios, inside their quartiles
        low, high = map(float, row[f"{part} quartiles"].split("-"))
        assert 0 < low <= round(row[f"{part} speed-up"], 3) <= high


def test_blocked_first_flips_its_flag_and_restores_it(monkeypatch):
    seen = []
    real = fast.conv.forward_uses_winograd
    monkeypatch.setattr(fast.conv, "forward_uses_winograd",
                        lambda *a: seen.append(fast.conv.BLOCKED_BEFORE_WINOGRAD) or real(*a))
    before = fast.conv.BLOCKED_BEFORE_WINOGRAD
    row = compare("bnnet", "blocked-first", 8, 1)
    assert fast.conv.BLOCKED_BEFORE_WINOGRAD is before
    assert set(seen) == {True, False} and row["train ms on"] > 0

