"""Optimisers (SGD, Adam, AdamW); the learning-rate schedules are in tinycnn.schedules.

Every update is done in place on the parameter arrays, in their own dtype (float32), with
scratch buffers allocated once: a step allocates nothing the size of a parameter. Adam's
dozen vectorised NumPy passes take ~0.3 ms for fastnet's 153,754 parameters, under 1% of a
training step; one fused Numba pass was slower (0.40 ms: LLVM does not vectorise a loop
that writes p, m and v; see benchmarks/bench_step_parts.py).
"""
import math

import numpy as np


def _collect(params):
    """Accept a model (anything with .parameters()) or an iterable of
    (layer_name, param_name, param, grad) / (param, grad) tuples."""
    if hasattr(params, "parameters"):
        params = params.parameters()
    out = []
    for i, item in enumerate(params):
        if not isinstance(item, (tuple, list)):
            raise TypeError(f"optimiser params must be the model itself (e.g. Adam(model)), "
                            f"model.parameters() or (layer, name, param, grad) tuples; item {i} is "
                            f"a {type(item).__name__}")
        if len(item) == 4:
            key, param, grad = f"{item[0]}.{item[1]}", item[2], item[3]
        elif len(item) == 2:
            key, (param, grad) = f"param_{i}", item
        else:
            raise TypeError("optimiser params must be a model or (layer, name, param, grad) tuples")
        if param.shape != grad.shape:
            raise ValueError(f"{key}: parameter shape {param.shape} != gradient shape {grad.shape}")
        out.append((key, param, grad))
    if not out:
        raise ValueError("optimiser got no parameters")
    return out


def check_hyper(owner, name, value, low, high=math.inf, low_open=False, high_open=True):
    """`value` as a float, or a ValueError naming `owner`'s parameter `name` when it is not a
    finite number in the interval (low, high) with the ends open or closed as asked."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    above = x > low if low_open else x >= low
    below = x < high if high_open else x <= high
    if not (math.isfinite(x) and above and below):
        if high == math.inf:
            rule = f"{'>' if low_open else '>='} {low:g} and finite"
        else:
            rule = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{owner}: {name} must be {rule}, got {value!r}")
    return x


class Optimizer:
    """Common parts: the parameter list, lr, zero_grad and state save/restore."""

    hyper = ()       # names of the hyper-parameters saved in state_dict
    buffers = ()     # names of per-parameter state arrays

    def __init__(self, params, lr):
        self.lr = check_hyper(type(self).__name__, "lr", lr, 0, low_open=True)
        self.params = _collect(params)
        self.steps = 0
        self.state = {key: {b: np.zeros_like(p) for b in self.buffers} for key, p, _ in self.params}
        # two scratch arrays per parameter, reused every step
        self._scratch = {key: (np.empty_like(p), np.empty_like(p)) for key, p, _ in self.params}

    def zero_grad(self):
        for _, _, g in self.params:
            g.fill(0)

    def step(self):
        self.steps += 1
        for key, p, g in self.params:
            self._update(p, g, self.state[key], *self._scratch[key])

    def state_dict(self):
        """{"type", "lr", "steps", hyper-parameters..., "buffers": {"key/name": array}}"""
        out = {"type": type(self).__name__, "lr": self.lr, "steps": self.steps}
        out.update({h: getattr(self, h) for h in self.hyper})
        out["buffers"] = {f"{k}/{b}": arr.copy() for k, st in self.state.items() for b, arr in st.items()}
        return out

    def _checked_hyper(self, values):
        """{name: value} for self.hyper, each checked as the constructor checks it."""
        return {}

    def load_state_dict(self, state):
        """Restore what state_dict saved. Everything is checked (the settings as the
        constructor checks them, the buffers' names, shapes and finiteness) before anything
        of this optimiser changes."""
        owner = type(self).__name__
        kind = state.get("type")
        if kind != owner:       # (a name as it is; anything else from the file as its repr)
            shown = kind if isinstance(kind, str) and kind.isidentifier() else repr(kind)
            raise ValueError(f"state is for {shown}, not {owner}")
        lr = check_hyper(owner, "lr", state.get("lr"), 0, low_open=True)
        steps = state.get("steps")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"{owner}: steps must be a whole number >= 0, got {steps!r}")
        hyper = self._checked_hyper({h: state.get(h) for h in self.hyper})
        expected = {f"{k}/{b}": arr for k, st in self.state.items() for b, arr in st.items()}
        if set(state["buffers"]) != set(expected):
            raise ValueError("optimiser state does not match the parameters: "
                             f"{sorted(set(state['buffers']) ^ set(expected))[:4]}")
        for name, arr in state["buffers"].items():
            if arr.shape != expected[name].shape:
                raise ValueError(f"optimiser state {name}: shape {arr.shape}, expected "
                                 f"{expected[name].shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"optimiser state {name}: holds NaN or infinite values")
        for name, arr in state["buffers"].items():
            expected[name][...] = arr
        self.lr, self.steps = lr, steps
        for h, value in hyper.items():
            setattr(self, h, value)


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum and L2 weight decay.

        g = grad + weight_decay * p
        v = momentum * v + g                      (when momentum > 0)
        p -= lr * (g + momentum * v)   Nesterov
        p -= lr * v                    classic momentum
        p -= lr * g                    plain
    """
    hyper = ("momentum", "nesterov", "weight_decay")

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        hyper = self._checked_hyper({"momentum": momentum, "nesterov": bool(nesterov),
                                     "weight_decay": weight_decay})
        self.buffers = ("velocity",) if hyper["momentum"] else ()
        self.momentum, self.nesterov, self.weight_decay = (hyper[h] for h in self.hyper)
        super().__init__(params, lr)

    def _checked_hyper(self, values):
        momentum = check_hyper("SGD", "momentum", values["momentum"], 0, 1)
        if not isinstance(values["nesterov"], bool):
            raise ValueError(f"SGD: nesterov must be true or false, got {values['nesterov']!r}")
        if values["nesterov"] and momentum == 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        return {"momentum": momentum, "nesterov": values["nesterov"],
                "weight_decay": check_hyper("SGD", "weight_decay", values["weight_decay"], 0)}

    def _update(self, p, grad, state, tmp, tmp2):
        g = grad
        if self.weight_decay:                 # g = grad + wd * p
            np.multiply(p, self.weight_decay, out=tmp)
            tmp += grad
            g = tmp
        if self.momentum:
            v = state["velocity"]
            v *= self.momentum                # v = momentum * v + g
            v += g
            if self.nesterov:                 # step = g + momentum * v
                np.multiply(v, self.momentum, out=tmp2)
                tmp2 += g
                g = tmp2
            else:
                g = v
        np.multiply(g, -self.lr, out=tmp)     # p -= lr * step
        p += tmp


class Adam(Optimizer):
    """Adam (Kingma & Ba), with bias correction; weight_decay adds L2 to the gradient.

        g = grad + weight_decay * p
        m = b1 * m + (1 - b1) * g              first moment (mean)
        v = b2 * v + (1 - b2) * g^2            second moment (uncentred variance)
        p -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)
    """
    hyper = ("betas", "eps", "weight_decay")
    buffers = ("m", "v")
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        hyper = self._checked_hyper({"betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.betas, self.eps, self.weight_decay = hyper["betas"], hyper["eps"], hyper["weight_decay"]
        super().__init__(params, lr)

    def _checked_hyper(self, values):
        name, betas = type(self).__name__, values["betas"]
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise ValueError(f"{name}: betas must be a pair of numbers, got {betas!r}")
        b1, b2 = betas
        return {"betas": (check_hyper(name, "betas[0]", b1, 0, 1), check_hyper(name, "betas[1]", b2, 0, 1)),
                "eps": check_hyper(name, "eps", values["eps"], 0, low_open=True),
                "weight_decay": check_hyper(name, "weight_decay", values["weight_decay"], 0)}

    def _update(self, p, grad, state, tmp, tmp2):
        b1, b2 = self.betas
        m, v = state["m"], state["v"]
        g = grad
        if self.weight_decay and self.decoupled:      # AdamW: shrink p directly
            p *= 1 - self.lr * self.weight_decay
        elif self.weight_decay:                       # Adam: L2 term in the gradient
            np.multiply(p, self.weight_decay, out=tmp)
            tmp += grad
            g = tmp
        m *= b1                                       # m = b1 m + (1 - b1) g
        np.multiply(g, 1 - b1, out=tmp2)
        m += tmp2
        np.multiply(g, g, out=tmp2)                   # v = b2 v + (1 - b2) g^2
        tmp2 *= 1 - b2
        v *= b2
        v += tmp2
        bc1, bc2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
        np.sqrt(v, out=tmp)                           # tmp = sqrt(v / bc2) + eps
        tmp *= 1 / math.sqrt(bc2)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)                    # p -= lr / bc1 * m / tmp
        tmp *= -self.lr / bc1
        p += tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr * weight_decay
    before the Adam step, instead of adding weight_decay * p to the gradient."""
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay)
