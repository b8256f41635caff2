"""benchmarks/bench_switch.py times whole models with one kernel method on and off in one
process: each half must really run with the switch as labelled, and the switch must be
left as it was."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_switch  # noqa: E402
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


def test_blocked_first_flips_its_flag_and_restores_it(monkeypatch):
    seen = []
    real = fast.conv.forward_uses_winograd
    monkeypatch.setattr(fast.conv, "forward_uses_winograd",
                        lambda *a: seen.append(fast.conv.BLOCKED_BEFORE_WINOGRAD) or real(*a))
    before = fast.conv.BLOCKED_BEFORE_WINOGRAD
    row = compare("bnnet", "blocked-first", 8, 1)
    assert fast.conv.BLOCKED_BEFORE_WINOGRAD is before
    assert set(seen) == {True, False} and row["train ms on"] > 0


def _pairs(n, on_first):
    return [on for i in range(n) for on in ((True, False) if (i % 2 == 0) == on_first else (False, True))]


def test_calls_alternate_in_pairs_and_the_speed_up_is_the_median_of_paired_ratios(monkeypatch):
    # A fake clock: off 1.25x as slow as on, and the machine 1% slower at every call. Calls
    # in pairs whose order flips cancel the drift: the median off/on ratio is 1.25, its
    # quartiles 1.25 / 1.01 and 1.25 * 1.01. (Timed as 12 on, then 12 off, it would not be.)
    calls, clock = [], [0]

    def fake_median_ms(fn, repeats, warmup=3):
        calls.append((fast.conv.BLOCKED, repeats, warmup))
        clock[0] += 1
        return (1.0 if fast.conv.BLOCKED else 1.25) * 1.01 ** clock[0]

    monkeypatch.setattr(bench_switch, "median_ms", fake_median_ms)
    before = fast.conv.BLOCKED
    row = compare("fastnet", "blocked", 8, 2)
    assert fast.conv.BLOCKED is before
    assert calls[:4] == [(True, 1, 3), (True, 1, 1), (False, 1, 3), (False, 1, 1)]   # warm-up, both ways
    assert all(c[1:] == (1, 0) for c in calls[4:])                                    # then one call each
    assert [c[0] for c in calls[4:]] == _pairs(12, True) + _pairs(5, True) + _pairs(12, False) + _pairs(5, False)
    for part in ("train", "infer"):
        assert abs(row[f"{part} speed-up"] - 1.25) < 1e-3          # off/on, not on/off
        low, high = map(float, row[f"{part} quartiles"].split("-"))
        assert abs(low - 1.25 / 1.01) < 1e-3 and abs(high - 1.25 * 1.01) < 1e-3
