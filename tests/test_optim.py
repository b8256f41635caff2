"""Optimisers against updates computed by hand, over several steps; schedules' shapes."""
import math
import tracemalloc

import numpy as np
import pytest

from tinycnn import optim, schedules


def problem():
    p = np.array([1.0, -2.0, 0.5], dtype=np.float32)
    g = np.zeros_like(p)
    grads = [np.array([0.1, -0.2, 0.3], np.float32), np.array([0.4, 0.0, -0.1], np.float32),
             np.array([-0.3, 0.2, 0.2], np.float32), np.array([0.05, 0.1, -0.4], np.float32)]
    return p, g, grads


def run(opt_factory, steps=4):
    p, g, grads = problem()
    opt = opt_factory([("layer", "W", p, g)])
    for gr in grads[:steps]:
        g[...] = gr
        opt.step()
    return p, opt


def test_sgd_plain_and_weight_decay():
    p, _ = run(lambda ps: optim.SGD(ps, lr=0.1))
    expected = problem()[0].astype(np.float64) - 0.1 * sum(problem()[2])
    np.testing.assert_allclose(p, expected, rtol=1e-6)
    p, _ = run(lambda ps: optim.SGD(ps, lr=0.1, weight_decay=0.5), steps=2)
    w = np.array([1.0, -2.0, 0.5])
    for gr in problem()[2][:2]:
        w = w - 0.1 * (gr + 0.5 * w)
    np.testing.assert_allclose(p, w, rtol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum(nesterov):
    p, _ = run(lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=nesterov))
    w, v = np.array([1.0, -2.0, 0.5]), np.zeros(3)
    for gr in problem()[2]:
        v = 0.9 * v + gr
        w = w - 0.1 * ((gr + 0.9 * v) if nesterov else v)
    np.testing.assert_allclose(p, w, rtol=1e-6)


@pytest.mark.parametrize("cls, wd", [(optim.Adam, 0.0), (optim.Adam, 0.1), (optim.AdamW, 0.1)])
def test_adam_by_hand(cls, wd):
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    p, opt = run(lambda ps: cls(ps, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd))
    w, m, v = np.array([1.0, -2.0, 0.5]), np.zeros(3), np.zeros(3)
    for t, gr in enumerate(problem()[2], start=1):
        gr = gr.astype(np.float64)
        if cls is optim.AdamW:
            w = w * (1 - lr * wd)
        else:
            gr = gr + wd * w
        m = b1 * m + (1 - b1) * gr
        v = b2 * v + (1 - b2) * gr * gr
        w = w - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    np.testing.assert_allclose(p, w, rtol=1e-5)
    assert opt.steps == 4 and p.dtype == np.float32


def test_state_is_kept_across_steps_and_restored():
    # Two steps, save, two more in a fresh optimiser loaded from the state == four steps.
    p_full, _ = run(lambda ps: optim.Adam(ps, lr=0.01))
    p, g, grads = problem()
    opt = optim.Adam([("layer", "W", p, g)], lr=0.01)
    for gr in grads[:2]:
        g[...] = gr
        opt.step()
    state = opt.state_dict()
    opt2 = optim.Adam([("layer", "W", p, g)], lr=0.5)
    opt2.load_state_dict(state)
    for gr in grads[2:]:
        g[...] = gr
        opt2.step()
    np.testing.assert_array_equal(p, p_full)
    with pytest.raises(ValueError, match="state is for Adam, not SGD"):
        optim.SGD([("layer", "W", p, g)], lr=0.1).load_state_dict(state)


def test_step_allocates_nothing_parameter_sized():
    p = np.zeros(1_000_000, np.float32)
    g = np.full_like(p, 0.1)
    for opt in (optim.Adam([("l", "W", p, g)]), optim.SGD([("l", "W", p, g)], 0.1, 0.9, True, 1e-4)):
        opt.step()
        tracemalloc.start()
        opt.step()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < p.nbytes / 10, f"{type(opt).__name__} allocated {peak} bytes"


def test_bad_arguments():
    p, g, _ = problem()
    with pytest.raises(ValueError, match="lr must be > 0"):
        optim.SGD([("l", "W", p, g)], lr=0)
    with pytest.raises(ValueError, match="nesterov needs momentum"):
        optim.SGD([("l", "W", p, g)], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="no parameters"):
        optim.Adam([])


def test_schedules():
    one = schedules.OneCycle(0.01, pct_start=0.25, div=25, final_div=1e4)
    lrs = [one(s, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.01 / 25)
    assert max(lrs) == pytest.approx(0.01) and int(np.argmax(lrs)) == 25
    assert lrs[-1] == pytest.approx(0.01 / 25 / 1e4)
    assert all(a <= b for a, b in zip(lrs[:25], lrs[1:26]))        # rises, then falls
    assert all(a >= b for a, b in zip(lrs[25:], lrs[26:]))
    cos = schedules.Cosine(0.1)
    assert cos(0, 10) == pytest.approx(0.1) and cos(5, 10) == pytest.approx(0.05) and cos(10, 10) == pytest.approx(0)
    warm = schedules.Cosine(0.1, warmup=4)
    assert [warm(s, 100) for s in range(4)] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    step = schedules.StepDecay(1.0, every=10, gamma=0.5)
    assert [step(s, 100) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    assert math.isclose(schedules.Constant(0.3)(50, 100), 0.3)


@pytest.mark.parametrize("make, change, message", [
    (lambda ps: optim.Adam(ps, lr=0.01), {"betas": "ab"}, "betas must be a pair of numbers"),
    (lambda ps: optim.Adam(ps, lr=0.01), {"betas": [math.nan, 0.9]}, r"betas\[0\] must be in \[0, 1\), got nan"),
    (lambda ps: optim.Adam(ps, lr=0.01), {"betas": [5, 0.9]}, r"betas\[0\] must be in \[0, 1\), got 5"),
    (lambda ps: optim.AdamW(ps, lr=0.01), {"eps": -1e-8}, "AdamW: eps must be > 0"),
    (lambda ps: optim.Adam(ps, lr=0.01), {"lr": None}, "Adam: lr must be > 0 and finite, got None"),
    (lambda ps: optim.Adam(ps, lr=0.01), {"steps": -3}, "steps must be a whole number >= 0, got -3"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), {"nesterov": "yes"}, "nesterov must be true or false"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), {"momentum": 1.5}, r"momentum must be in \[0, 1\)"),
])
def test_a_saved_state_is_checked_like_the_constructor_before_anything_changes(make, change, message):
    """A checkpoint's optimiser settings (hand-edited, or damaged) are refused with the
    constructor's own message, and the optimiser is left exactly as it was."""
    p, g, _ = problem()
    opt = make([("l", "W", p, g)])
    opt.step()
    before = opt.state_dict()
    state = {**before, **change, "buffers": {k: v + 1 for k, v in before["buffers"].items()}}
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(state)
    after = opt.state_dict()
    assert {k: v for k, v in after.items() if k != "buffers"} == {k: v for k, v in before.items() if k != "buffers"}
    assert all(np.array_equal(after["buffers"][k], before["buffers"][k]) for k in before["buffers"])


def test_a_saved_state_with_nan_buffers_is_refused():
    p, g, _ = problem()
    opt = optim.Adam([("l", "W", p, g)], lr=0.01)
    state = opt.state_dict()
    state["buffers"]["l.W/m"][0] = np.nan
    with pytest.raises(ValueError, match="l.W/m: holds NaN or infinite values"):
        opt.load_state_dict(state)
    assert not np.isnan(opt.state["l.W"]["m"]).any()
