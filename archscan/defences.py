"""Defences a client applies to its update before sharing it: their spelling, their effect on the
shared gradients (what ``validate`` attacks) and the noise they add (what ``scan`` predicts with).

Spelling (``--defence``, repeatable, applied in the order given)::

    dp:sigma=S[,clip=C]    DP-SGD: clip each image's gradient (all shared parameters as one vector)
                           to L2 norm C, then add Gaussian noise of std S*C to every coordinate
                           (std S without clip: plain Gaussian noise, as the DLG paper's defence)
    prune:ratio=R          zero the fraction R of each parameter's gradient entries smallest in
                           magnitude (DLG's gradient pruning; top-k sparsification keeps 1 - R)
    quant:bits=B           round each parameter's gradient to 2**B - 1 uniform levels over
                           [-max|g|, max|g|] (deterministic rounding)

Only Gaussian noise has a closed-form effect on the optimisation view: a direction whose singular
value falls below the noise level is lost (docs/theory.md, "Defences").  Pruning and quantisation
are post-processing of the gradient: they can only lose information, so when they come after the
noise (or alone) scan's undefended figure is an upper bound on what leaks; scan says so, and
``validate`` measures what they really cost the attacks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from archscan.errors import InputError
from archscan.fedavg import suffix as fedavg_suffix

# kind -> (settings with defaults, required settings, one line of help)
KINDS = {
    "dp": ({"sigma": None, "clip": None}, ("sigma",), "dp:sigma=S[,clip=C]  per-image clipping to norm C, Gaussian noise S*C"),
    "prune": ({"ratio": None}, ("ratio",), "prune:ratio=R  zero the fraction R of smallest-magnitude entries per tensor"),
    "quant": ({"bits": None}, ("bits",), "quant:bits=B  round each tensor to 2**B - 1 uniform levels"),
}
NOISE_SEED = 0x5EED   # the defence's noise is drawn from (seed, NOISE_SEED): independent of the attacks' draws


@dataclass(frozen=True)
class Defence:
    """One defence: ``kind`` and its settings (floats; ``clip`` may be None)."""

    kind: str
    settings: tuple   # ((key, value), ...) in KINDS order

    def get(self, key: str):
        return dict(self.settings)[key]

    def to_dict(self) -> dict:
        return {"kind": self.kind, **{k: v for k, v in self.settings if v is not None}}

    def __str__(self) -> str:
        return f"{self.kind}:" + ",".join(f"{k}={v:g}" for k, v in self.settings if v is not None)

    @property
    def noise_std(self) -> float:
        """Std of DP's Gaussian noise per coordinate of the (clipped) update: sigma*clip, or sigma."""
        if self.kind != "dp":
            return 0.0
        clip = self.get("clip")
        return self.get("sigma") * (clip if clip is not None else 1.0)

    @property
    def adds_noise(self) -> bool:
        return self.noise_std > 0


def adds_noise(defences) -> bool:
    """Some defence adds Gaussian noise: the chain's exact-gradient reasoning no longer applies."""
    return any(d.adds_noise for d in defences)


def parse_defence(text: str) -> Defence:
    """``"dp:sigma=0.01,clip=1"`` -> Defence; a bad spelling is an InputError naming it."""
    kind, _, rest = text.strip().partition(":")
    if kind not in KINDS:
        raise InputError(f"--defence {text}: unknown defence {kind!r}; choose from "
                         + "; ".join(h for _, _, h in KINDS.values()))
    defaults, required, usage = KINDS[kind]
    values = dict(defaults)
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, raw = item.partition("=")
        if not eq or key.strip() not in defaults:
            raise InputError(f"--defence {text}: {item!r} is not a setting of {kind} (usage: {usage})")
        try:
            values[key.strip()] = float(raw)
        except ValueError:
            raise InputError(f"--defence {text}: {key.strip()}={raw!r} is not a number") from None
    missing = [k for k in required if values[k] is None]
    if missing:
        raise InputError(f"--defence {text}: {kind} needs {', '.join(missing)} (usage: {usage})")
    _check_range(text, kind, values)
    return Defence(kind, tuple(values.items()))


def _check_range(text: str, kind: str, v: dict) -> None:
    finite = lambda x: x is not None and math.isfinite(x)  # noqa: E731
    checks = {
        "dp": (lambda: finite(v["sigma"]) and v["sigma"] >= 0 and (v["clip"] is None or finite(v["clip"]) and v["clip"] > 0),
               "sigma >= 0 and clip > 0"),
        "prune": (lambda: 0.0 <= v["ratio"] < 1.0, "0 <= ratio < 1"),
        "quant": (lambda: finite(v["bits"]) and v["bits"] == int(v["bits"]) and 1 <= v["bits"] <= 32,
                  "bits a whole number in 1..32"),
    }
    ok, need = checks[kind]
    if not ok():
        raise InputError(f"--defence {text}: out of range (need {need})")


def spelled(items: list) -> str:
    """A report's recorded defences (``threat_model["defences"]``) as the user spells them."""
    return ", ".join(f"{d['kind']}:" + ",".join(f"{k}={v:g}" for k, v in d.items() if k != "kind") for d in items)


def threat_suffix(defences, fedavg: dict | None) -> str:
    """``", defences dp:sigma=..."`` (and the FedAvg local steps, when more than one) for a report's
    threat-model line, from its ``defences`` and ``fedavg`` entries; '' for a plain single-gradient client."""
    return (f", defences {spelled(defences)}" if defences else "") + fedavg_suffix(fedavg)


def parse_defences(items) -> tuple:
    return tuple(parse_defence(t) for t in (items or ()))


# --------------------------------------------------------------------------------------------
# validate: the update the client really shares


def apply_defences(defences, gradients: dict, seed: int, per_sample: bool, first_index: int = 0) -> dict:
    """The defended gradients, in the order of ``defences``.

    ``gradients`` as in a Target: ``param.shape`` each, or ``(B, *param.shape)`` with
    ``per_sample`` (one client image per row: clipping and pruning act on each row alone).
    Noise is drawn on the CPU in float64, row r from ``(seed, first_index + r)``: a run is
    reproducible, its noise does not depend on the device, and image i gets the same noise whether
    it is attacked alone (a sweep task) or with the others (validate).
    """
    if not defences:
        return gradients
    names = list(gradients)
    rows = {n: (g if per_sample else g.unsqueeze(0)) for n, g in gradients.items()}
    count = next(iter(rows.values())).shape[0]
    out = {n: [] for n in names}
    for r in range(count):
        gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + NOISE_SEED) * 65_537 + first_index + r)
        row = {n: rows[n][r:r + 1] for n in names}
        for d in defences:
            row = _STEPS[d.kind](d, row, gen)
        for n in names:
            out[n].append(row[n])
    return {n: (torch.cat(out[n]) if per_sample else out[n][0][0]) for n in names}


def apply_to_batch(defences, per_image: dict, seed: int) -> dict:
    """One client's shared update from its per-image gradients ``(B, *param.shape)``: DP-SGD's
    clipping acts on each image's gradient, then the rows are summed, then every defence's other
    step (the noise, once on the sum; pruning; quantisation) acts on the sum, in order."""
    rows = dict(per_image)
    for d in defences:
        if d.kind == "dp" and d.get("clip") is not None:
            rows = _clip(rows, d.get("clip"))
    summed = {n: g.sum(0) for n, g in rows.items()}
    on_sum = tuple(Defence("dp", (("sigma", d.noise_std), ("clip", None))) if d.kind == "dp" else d
                   for d in defences)   # DP's noise step alone, once on the sum
    return apply_defences(on_sum, summed, seed, per_sample=False)


def _clip(rows: dict, clip: float) -> dict:
    """Each row (one image's gradient over all parameters) scaled to L2 norm at most ``clip``."""
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in rows.values()))
    scale = torch.clamp(clip / norms.clamp_min(torch.finfo(norms.dtype).tiny), max=1.0)
    return {n: g * scale.view(-1, *[1] * (g.dim() - 1)) for n, g in rows.items()}


def _dp(d: Defence, rows: dict, gen: torch.Generator) -> dict:
    if d.get("clip") is not None:
        rows = _clip(rows, d.get("clip"))
    if not d.adds_noise:
        return rows
    return {n: g + d.noise_std * torch.randn(g.shape, generator=gen, dtype=torch.float64).to(g)
            for n, g in rows.items()}


def _prune(d: Defence, rows: dict, gen: torch.Generator) -> dict:
    out = {}
    for n, g in rows.items():
        flat = g.flatten(1)
        k = int(math.floor(d.get("ratio") * flat.shape[1]))     # entries zeroed per row
        if k == 0:
            out[n] = g
            continue
        cut = flat.abs().kthvalue(k, dim=1, keepdim=True).values
        keep = flat.abs() > cut
        out[n] = (flat * keep).view_as(g)
    return out


def _quant(d: Defence, rows: dict, gen: torch.Generator) -> dict:
    levels = 2 ** int(d.get("bits")) - 1
    out = {}
    for n, g in rows.items():
        flat = g.flatten(1)
        top = flat.abs().amax(dim=1, keepdim=True)
        step = torch.where(top > 0, 2 * top / max(levels - 1, 1), torch.ones_like(top))
        out[n] = (torch.round(flat / step) * step).clamp(-top, top).view_as(g) if levels > 1 else (
            torch.sign(flat) * top).view_as(g)
    return out


_STEPS = {"dp": _dp, "prune": _prune, "quant": _quant}


# --------------------------------------------------------------------------------------------
# scan: what the prediction models


def noise_variance(defences, grad_sq_norm: float) -> float:
    """Gaussian noise per gradient coordinate, in the units of the client's own (unclipped)
    gradient of squared norm ``grad_sq_norm``: clipping to C scales the gradient by
    min(1, C / ||g||), so noise of std sigma*C on the clipped one is std sigma*max(C, ||g||) on it.
    Independent noises add."""
    total, scale = 0.0, 1.0                 # scale: how much earlier clips shrank the gradient
    norm = math.sqrt(max(grad_sq_norm, 0.0))
    for d in defences:
        if d.kind != "dp":
            continue
        if d.get("clip") is not None:
            scale *= min(1.0, d.get("clip") / max(norm * scale, 1e-300))
        total += (d.noise_std / scale) ** 2
    return total


def unmodelled(defences) -> tuple:
    """Defences the prediction does not model (everything but Gaussian noise)."""
    return tuple(d for d in defences if d.kind != "dp")


def unmodelled_note(defences) -> str:
    """What scan's figure means when some defences are not modelled; '' when all are."""
    rest = unmodelled(defences)
    if not rest:
        return ""
    names = ", ".join(str(d) for d in rest)
    first_noise = next((i for i, d in enumerate(defences) if d.adds_noise), None)
    before = first_noise is not None and any(d.kind != "dp" for d in defences[:first_noise])
    why = ("they come before the noise, so this is not guaranteed to bound what leaks" if before else
           "they only post-process the gradient, so this bounds what leaks from above")
    return (f"{names} not modelled by the prediction: the figures are for the gradient without "
            f"{'them' if len(rest) > 1 else 'it'} ({why}); validate --defence measures it")
