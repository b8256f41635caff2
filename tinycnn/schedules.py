"""Learning-rate schedules: lr as a function of the optimisation step.

Each schedule is called as schedule(step, total_steps) with step counted from 0, and
returns the learning rate for that step. The trainer sets optimizer.lr from it before
every step, so any callable with that signature works.
"""
import math


class Constant:
    """lr stays at its starting value."""

    def __init__(self, lr):
        self.lr = float(lr)

    def __call__(self, step, total_steps):
        return self.lr


class StepDecay:
    """lr * gamma ** (step // every): multiply by gamma every `every` steps."""

    def __init__(self, lr, every, gamma=0.1):
        if every < 1:
            raise ValueError(f"StepDecay: every must be >= 1 step, got {every}")
        self.lr, self.every, self.gamma = float(lr), int(every), float(gamma)

    def __call__(self, step, total_steps):
        return self.lr * self.gamma ** (step // self.every)


class Cosine:
    """Half a cosine from lr down to min_lr over the whole run, after an optional linear
    warm-up of `warmup` steps from 0:  lr_t = min_lr + (lr - min_lr) * (1 + cos(pi t)) / 2."""

    def __init__(self, lr, min_lr=0.0, warmup=0):
        self.lr, self.min_lr, self.warmup = float(lr), float(min_lr), int(warmup)

    def __call__(self, step, total_steps):
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, total_steps - self.warmup)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


class OneCycle:
    """One cycle (Smith & Topin): warm up from max_lr/div to max_lr over the first
    `pct_start` of the run, then anneal to max_lr/(div*final_div), both halves cosine-shaped.
    A high peak explores; the long descent settles into a good minimum."""

    def __init__(self, max_lr, pct_start=0.25, div=25.0, final_div=1e4):
        if not 0 < pct_start < 1:
            raise ValueError(f"OneCycle: pct_start must be in (0, 1), got {pct_start}")
        self.max_lr, self.pct_start, self.div, self.final_div = float(max_lr), float(pct_start), float(div), float(final_div)

    def __call__(self, step, total_steps):
        start, low = self.max_lr / self.div, self.max_lr / (self.div * self.final_div)
        peak = max(1, round(self.pct_start * total_steps))
        if step < peak:
            lo, hi, t = start, self.max_lr, step / peak
        else:
            lo, hi, t = low, self.max_lr, 1 - (step - peak) / max(1, total_steps - 1 - peak)
        t = min(max(t, 0.0), 1.0)
        return lo + (hi - lo) * 0.5 * (1 - math.cos(math.pi * t))
