"""Hyperparameter grids of the tuned attacks behind ``archscan validate --budget``.

One fixed configuration under-reports what an attacker reaches: a smaller TV weight, a longer run
or a better start gains 4-15 dB on some models and loses on others.  ``--budget`` therefore runs
each optimisation attack over a grid of configurations and keeps every result:

* ``fast``      - a tiny grid for tests and quick looks (the ``--fast`` iteration counts);
* ``default``   - a small grid that fits a CPU (each attack's own default configuration plus the
  few alternatives that won somewhere in the calibration measurements: README, "Validate",
  ``benchmarks/tuning_gain.py``);
* ``thorough``  - the full factorial grid (meant for a GPU: Inverting Gradients runs every
  configuration that shares an iteration count as rows of one batched tensor program).

Axes (per attack; every grid starts with the attack's default configuration at that budget, so
the tuned best is never below the fixed one on the same seed):

* ``ig``     - TV weight (log grid with 0), learning rate, restarts, start (uniform noise /
  mid-grey / prior mean), signed vs plain Adam, cosine vs relative-L2 matching, iterations;
* ``hybrid`` - TV weight of the image layer, learning rate, image start (0.5 / prior mean),
  iterations per layer;
* ``dlg``    - TV weight (relative to the gradient energy), start, restarts, learning rate,
  iterations;
* ``rgap``   - the null-space start (0.5 / prior mean; a closed form has nothing else to tune).

Other attacks (``prior``, ``analytic``, ``april``) run once.
"""
from __future__ import annotations

import itertools

BUDGETS = ("fast", "default", "thorough")

# the single configuration --fast runs (and the base of the fast grid)
FAST_SETTINGS = {"ig": {"iterations": 300}, "hybrid": {"iterations": 60}, "dlg": {"iterations": 20}}

_TV_LOG = [0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]

# Each grid is a union of factorial blocks: {axis: [values]}; missing axes keep the base value.
GRIDS = {
    "ig": {
        "fast": [{"tv": [1e-2, 1e-3, 1e-4], "signed": [True, False], "init": ["grey"]}],
        # TV weight is the axis that matters (the winner is 0, 1e-4, 1e-3, 1e-2 or 1e-1 depending on
        # the model); plain Adam, a grey start and L2 matching add 0.3-1 dB where they win; 3000
        # iterations and other learning rates changed < 0.5 dB in the exploration (8 000 iterations lose on
        # ResNet-8: docs/scores.md)
        "default": [{"tv": [1e-2, 1e-3, 1e-4, 0.0], "signed": [True, False], "init": ["random", "grey"]},
                    {"tv": [1e-4, 1e-2], "loss": ["l2"], "init": ["grey"], "signed": [False]},
                    {"tv": [1e-1]}],
        "thorough": [
            {"tv": _TV_LOG, "lr": [0.03, 0.1, 0.3], "init": ["random", "grey", "prior"], "signed": [True, False],
             "loss": ["cosine", "l2"], "iterations": [1000, 4000], "restarts": [2]},
        ],
    },
    "hybrid": {
        "fast": [{"tv": [0.3, 1e-2], "image_start": [0.5, "prior"]}],
        "default": [{"tv": [0.3, 1e-2, 0.0], "image_start": [0.5, "prior"]}],
        "thorough": [{"tv": [0.0, 1e-3, 1e-2, 0.1, 0.3, 1.0], "lr": [0.05, 0.2, 0.5], "image_start": [0.5, "prior"],
                      "iterations": [200, 1000]}],
    },
    "dlg": {
        "fast": [{"init": ["random", "grey"]}],
        "default": [{"init": ["grey"], "iterations": [50, 200]}, {"init": ["grey"], "tv": [1e-4]}],
        "thorough": [{"init": ["random", "grey", "prior"], "tv": [0.0, 1e-6, 1e-4, 1e-2], "lr": [0.1, 1.0],
                      "iterations": [50, 300], "restarts": [2]}],
    },
    "rgap": {b: [{"image_start": [0.5, "prior"]}] for b in BUDGETS},
}


def base_settings(attack: str, budget: str) -> dict:
    """The attack's own configuration at ``budget`` (overrides of its defaults): the fixed run."""
    return dict(FAST_SETTINGS.get(attack, {})) if budget == "fast" else {}


def configurations(attack: str, budget: str, overrides: dict | None = None) -> list[dict]:
    """The grid of ``attack`` at ``budget``: a list of settings overrides, the base one first.

    ``overrides`` (the user's ``--set``) are applied on top of every configuration; duplicates
    (configurations equal in every setting) are dropped, keeping the first.
    """
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose from {', '.join(BUDGETS)}")
    base = base_settings(attack, budget)
    configs = [base]
    for block in GRIDS.get(attack, {}).get(budget, []):
        axes = list(block)
        for values in itertools.product(*(block[a] for a in axes)):
            configs.append({**base, **dict(zip(axes, values))})
    from archscan.validate.attacks import ATTACKS
    defaults = ATTACKS[attack].defaults if attack in ATTACKS else {}
    out, seen = [], set()
    for c in configs:
        c = {**c, **(overrides or {})}
        key = tuple(sorted((k, repr(v)) for k, v in {**defaults, **c}.items()))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


_SHORT = {"iterations": "it", "restarts": "r", "image_start": "start", "record_every": None, "jitter": None}


def label(attack: str, settings: dict, defaults: dict) -> str:
    """Compact name of a configuration: its settings that differ from the attack's defaults."""
    parts = []
    for k, v in settings.items():
        if k in defaults and defaults[k] == v or _SHORT.get(k, k) is None or k == "seed":
            continue
        if isinstance(v, bool):
            parts.append(k if v else f"no-{k}")
        elif isinstance(v, float):
            parts.append(f"{_SHORT.get(k, k)}={v:g}")
        else:
            parts.append(f"{_SHORT.get(k, k)}={v}")
    return "default" if not parts else " ".join(parts)
