"""R-GAP: recursive closed-form gradient attack (Zhu & Blaschko 2021), with R-CONV's ReLU rule.

The model must be a chain ``x -> A_1 -> sigma_1 -> ... -> A_d (Linear head)`` of Conv2d / Linear
layers, element-wise activations and reshapes (traced with ``torch.fx``).  From the top:

1. the head's input and its output gradient ``g`` come from the Linear-with-bias identity
   ``x = dW[j]/db[j]``, ``g = db`` (or, without a bias, from the rank-one ``dW = g x^T`` plus the
   label and a 1-D search for the scale);
2. below every activation ``z = sigma^-1(y)`` and ``g_z = sigma'(z) * g_y``; ReLU outputs that are
   zero give no value but a zero gradient (R-CONV);
3. at every Conv2d / Linear, the input ``x`` solves in the least-squares sense the stacked system

   * forward rows   ``A x = z - b``           (only where ``z`` is known),
   * gradient rows  ``dl/dW(x; g_z) = dW_observed``  (a linear map of ``x`` once ``g_z`` is known),

   and the gradient moves down as ``g_x = A^T g_z``.

The operators are applied matrix-free (patches of ``x`` and batched matrix products) and the
system is solved with LSQR from a start point, i.e. the least-squares solution closest to it,
written in torch so it runs on any device.  Everything runs in float64 (float32 costs ~50 dB on
exact cases).  The independent problems of a per-sample target (one image each) go down the
recursion together: every state, layer system and solve holds all K of them on a leading
dimension, and each problem's result is the one it gets alone.

Layout: :mod:`.graph` (the traced graph as steps, shared with :mod:`.dag`), :mod:`.chain` (the
chain's link rule, shapes and checks, the chain's forward), :mod:`.activations` (element-wise
inverses and slopes), :mod:`.layer_system` (one layer's operators and adjoints), :mod:`.solvers`
(LSQR, dense least squares); this module holds the recursion and the attack, and re-exports the
public names of the others.
"""
from __future__ import annotations

import torch
from torch import nn

from archscan.validate.attacks.activations import act_forward, act_inverse, act_slope
from archscan.validate.attacks.analytic import (
    head_labels,
)
from archscan.validate.attacks.base import Attack, Target, prepare_model
from archscan.validate.attacks.chain import build_chain, run_steps, trace_chain
from archscan.validate.attacks.steps import Chain, Step
from archscan.validate.attacks.dag import Dag, build_dag, dag_recursion, trace_dag
from archscan.validate.attacks.layer_system import LayerSystem
from archscan.validate.attacks.recursion import (
    State,
    descend_elementwise,
    descend_layer,
    rank_one_head,
    solve_layer,
    top_state,
)
from archscan.validate.attacks.solvers import (
    dense_matrix,
    dense_solve,
    lsqr,
)

__all__ = ["Chain", "LayerSystem", "RGAPAttack", "State", "Step", "act_forward", "act_inverse",
           "act_slope", "build_chain", "dense_matrix", "dense_solve", "descend_elementwise",
           "descend_layer", "lsqr", "rank_one_head", "rgap_recursion", "run_steps", "solve_layer",
           "top_state", "trace_chain"]


def rgap_recursion(chain: Chain, grads: dict, labels, settings: dict, refine=None):
    """Run the whole recursion for K problems (one image each) at once.

    ``grads`` holds their gradients stacked ``(K, *param.shape)``, ``labels`` one label (or None)
    per problem; ``refine`` (the hybrid's hook) needs K = 1.

    Returns
    -------
    tuple
        ``(images (K, C, H, W), solver iterations per problem, per-problem list of per-layer
        diagnostics)``.
    """
    with torch.no_grad():  # closed form: no autograd graph (the hybrid re-enables it to refine)
        return _recursion(chain, grads, labels, settings, refine)


def _recursion(chain: Chain, grads: dict, labels, settings: dict, refine=None):
    """Body of :func:`rgap_recursion`."""
    state = top_state(chain, grads, labels)
    K = state.x.shape[0]
    layers, iterations = [[] for _ in range(K)], [0] * K
    starts = start_activations(chain, settings["image_start"], state.g)
    for index in reversed(range(chain.head)):
        step = chain.steps[index]
        if step.kind in ("linear", "conv"):
            state, infos = descend_layer(step, state, grads, settings, refine, starts[index])
            for k, info in enumerate(infos):
                layers[k].append(info)
                iterations[k] += info["solver_iterations"] + info.get("refine_iterations", 0)
        else:
            state = descend_elementwise(step, state, settings["relu_tol"])
    return state.x.reshape(K, *chain.input_shape), iterations, layers


def start_activations(chain: Chain, image_start, like: torch.Tensor) -> list:
    """The input of every step when the image ``image_start`` (a constant, or a ``C x H x W``
    tensor such as the prior mean) is fed to the chain.

    A deficient layer's least-squares solve starts there, so its null space keeps the value the
    start image has -- the nonlinear counterpart of the prediction's prior mean in the null space
    (starting hidden layers at zero instead puts values no image produces through the inverse
    activations below).
    """
    x = start_image(image_start, chain.input_shape, like)
    out = []
    with torch.no_grad():
        for step in chain.steps:
            out.append(x)
            x = run_steps([step], x)
    return out


def start_image(image_start, shape: tuple, like: torch.Tensor) -> torch.Tensor:
    """``1 x C x H x W`` start image: the constant ``image_start`` or the given image tensor."""
    if torch.is_tensor(image_start):
        return image_start.reshape(1, *shape).to(like)
    return torch.full((1, *shape), float(image_start), dtype=like.dtype, device=like.device)


def resolve_image_start(settings: dict, shape: tuple, seed: int, device) -> dict:
    """Settings with ``image_start="prior"`` replaced by the prior mean image (float64)."""
    if isinstance(settings.get("image_start"), str):
        if settings["image_start"] != "prior":
            raise ValueError(f"image_start {settings['image_start']!r}: a number or 'prior'")
        from archscan.validate.attacks.prior import prior_mean_image
        return {**settings, "image_start": prior_mean_image(shape, seed, dtype=torch.float64, device=device)}
    return settings


class RGAPAttack(Attack):
    """R-GAP on chain models (Conv2d/Linear + invertible activations or ReLU, Linear head).

    Concatenated conv branches (a DAG, :mod:`.dag`) are handled too: a tensor read by several
    layers is solved from all their rows stacked.

    Settings: ``solver`` (``"auto"``: grouped convs split into their independent groups and every
    system of at most ``dense_max`` unknowns solved densely, LSQR above; ``"lsqr"`` matrix-free;
    ``"dense"`` explicit SVD least squares for small layers / cross-checks), ``max_iter`` and ``tol`` (LSQR), ``relu_tol`` (relative level
    below which a recovered ReLU output counts as zero), ``image_start`` (a constant image; every
    layer's solution is the least-squares solution closest to that image's activation there, so a
    null space keeps mid-grey values as the prediction's prior mean does -- 0.5 gives 11.4 dB on
    CNN6-d where 0, the minimum-norm solution, gives 8.1; ``"prior"`` starts at the prior mean image
    itself, the null-space value the prediction assumes).  Arithmetic is float64 always.
    """

    name = "rgap"
    defaults = {"solver": "auto", "dense_max": 1024, "max_iter": 5000, "tol": 1e-14, "relu_tol": 1e-9,
                "image_start": 0.5}

    def applicable(self, model: nn.Module, input_shape: tuple | None = None) -> str | None:
        """None for a chain (or concatenated-branch DAG) model R-GAP can invert, else why not."""
        if input_shape is None:
            traced = trace_chain(model)
            if isinstance(traced, str):
                dag = trace_dag(model)
                return traced if isinstance(dag, str) else None
            return None
        found = self._structure(prepare_model(model, next(model.parameters()).device, torch.float64),
                                input_shape)
        return found if isinstance(found, str) else None

    @staticmethod
    def _structure(model: nn.Module, input_shape: tuple):
        """The model's :class:`Chain`, else its :class:`~.dag.Dag`, else the chain's reason."""
        chain = build_chain(model, input_shape)
        if not isinstance(chain, str):
            return chain
        dag = build_dag(model, input_shape)
        return chain if isinstance(dag, str) else dag

    def _batch_reason(self, target: Target) -> str | None:
        """The recursion needs one image per gradient."""
        if target.batch_size > 1 and not target.per_sample:
            return f"{self.name} needs one gradient per image (got a summed batch of {target.batch_size})"
        return None

    def _run(self, target: Target, seed: int, refine_factory=None):
        """The recursion of all independent problems at once, in float64 on the target's device.

        With a refinement hook (the hybrid attack) the problems run one at a time (K = 1) through
        the same batched code: the hook refines one image's layer input by gradient matching.
        """
        model = prepare_model(target.model, target.device, torch.float64)
        structure = self._structure(model, target.input_shape)
        settings = resolve_image_start(self.settings, target.input_shape, seed, target.device)
        stacked = {k: v.to(device=target.device, dtype=torch.float64)
                   for k, v in target.stacked_gradients().items()}
        labels = [head_labels(prob, {k: v[b] for k, v in stacked.items()}, 1)
                  for b, prob in enumerate(target.problems())]
        batches = [slice(0, len(labels))] if refine_factory is None else \
            [slice(b, b + 1) for b in range(len(labels))]
        images, layers, iterations = [], [], 0
        for batch in batches:
            grads = {k: v[batch] for k, v in stacked.items()}
            image, iters, info = self._batch(structure, grads, labels[batch], settings, seed + batch.start,
                                             refine_factory)
            images.append(image)
            layers.extend(info)
            iterations += sum(iters)
        residuals = [problem[-1]["residual"] if problem else None for problem in layers]  # image layer: solved last
        return torch.cat(images), iterations, torch.cat(labels), {"layers": layers, "final_objective": residuals}

    @staticmethod
    def _batch(structure, grads: dict, labels: list, settings: dict, seed: int, refine_factory):
        """The recursion of one batch of problems (all of them, or one with a refinement hook)."""
        ints = [int(label[0]) for label in labels]
        if isinstance(structure, Dag):  # concatenated branches: no per-layer refinement hook
            return dag_recursion(structure, grads, ints, settings)
        refine = None
        if refine_factory is not None:
            refine = refine_factory(structure, {k: v[0] for k, v in grads.items()}, labels[0], seed)
        return rgap_recursion(structure, grads, ints, settings, refine)
