"""Learning-rate schedules: lr as a function of the optimisation step.

Each schedule is called as schedule(step, total_steps) with step counted from 0, and
returns the learning rate for that step. The trainer sets optimizer.lr from it before
every step, so any callable with that signature works (fit checks that what it returns is
a finite number >= 0). The schedules here check their arguments when they are made, as the
optimisers do: a negative or NaN rate would train uphill or wreck the weights, silently.
"""
import math

from .checks import whole_number
from .optim import check_hyper


class Constant:
    """lr stays at its starting value."""

    def __init__(self, lr):
        self.lr = check_hyper("Constant", "lr", lr, 0, low_open=True)

    def __call__(self, step, total_steps):
        return self.lr

    def __repr__(self):
        return f"Constant({self.lr:g})"


class StepDecay:
    """lr * gamma ** (step // every): multiply by gamma every `every` steps."""

    def __init__(self, lr, every, gamma=0.1):
        self.lr = check_hyper("StepDecay", "lr", lr, 0, low_open=True)
        self.every = whole_number(every, 1, "StepDecay", "every", " of steps")
        self.gamma = check_hyper("StepDecay", "gamma", gamma, 0, 1, low_open=True, high_open=False)

    def __call__(self, step, total_steps):
        return self.lr * self.gamma ** (step // self.every)

    def __repr__(self):
        return f"StepDecay({self.lr:g}, every={self.every}, gamma={self.gamma:g})"


class Cosine:
    """Half a cosine from lr down to min_lr over the whole run, after an optional linear
    warm-up of `warmup` steps from 0:  lr_t = min_lr + (lr - min_lr) * (1 + cos(pi t)) / 2."""

    def __init__(self, lr, min_lr=0.0, warmup=0):
        self.lr = check_hyper("Cosine", "lr", lr, 0, low_open=True)
        # min_lr 0 is fine: t stays below 1 within the run, so the last step's lr is above it
        self.min_lr = check_hyper("Cosine", "min_lr", min_lr, 0, self.lr, high_open=False)
        self.warmup = whole_number(warmup, 0, "Cosine", "warmup", " of steps")

    def __call__(self, step, total_steps):
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, total_steps - self.warmup)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    def __repr__(self):
        return f"Cosine({self.lr:g}, min_lr={self.min_lr:g}, warmup={self.warmup})"


class OneCycle:
    """One cycle (Smith & Topin): warm up from max_lr/div to max_lr over the first
    `pct_start` of the run, then anneal to max_lr/(div*final_div), both halves cosine-shaped.
    A high peak explores; the long descent settles into a good minimum."""

    def __init__(self, max_lr, pct_start=0.25, div=25.0, final_div=1e4):
        self.max_lr = check_hyper("OneCycle", "max_lr", max_lr, 0, low_open=True)
        self.pct_start = check_hyper("OneCycle", "pct_start", pct_start, 0, 1, low_open=True)
        # div, final_div >= 1: the run starts and ends at or below the peak, never above it
        self.div = check_hyper("OneCycle", "div", div, 1)
        self.final_div = check_hyper("OneCycle", "final_div", final_div, 1)

    def __call__(self, step, total_steps):
        start, low = self.max_lr / self.div, self.max_lr / (self.div * self.final_div)
        peak = max(1, round(self.pct_start * total_steps))
        if step < peak:
            lo, hi, t = start, self.max_lr, step / peak
        else:
            lo, hi, t = low, self.max_lr, 1 - (step - peak) / max(1, total_steps - 1 - peak)
        t = min(max(t, 0.0), 1.0)
        return lo + (hi - lo) * 0.5 * (1 - math.cos(math.pi * t))

    def __repr__(self):
        return (f"OneCycle({self.max_lr:g}, pct_start={self.pct_start:g}, div={self.div:g}, "
                f"final_div={self.final_div:g})")
