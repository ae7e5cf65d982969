"""One forward/backward on a probe image: each Linear/Conv2d layer's weight and the gradient of the
loss at its output, as numpy.  The last step that touches torch for scan; used for conditioning
with the user's weights (rank is a property of the architecture, conditioning of the weights)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def capture(model: nn.Module, probe: np.ndarray, label: int = 0) -> dict:
    """{module path: {"weight": array, "grad_out": array (per sample, batch dropped)}}."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    grads, hooks = {}, []
    for name, mod in layers.items():
        hooks.append(mod.register_full_backward_hook(
            lambda m, gin, gout, name=name: grads.__setitem__(name, gout[0].detach()[0].double().numpy())))
    try:
        x = torch.as_tensor(probe, dtype=torch.float32)[None].requires_grad_(True)
        loss = F.cross_entropy(model.eval()(x), torch.tensor([label]))
        loss.backward()
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
    return {n: {"weight": m.weight.detach().double().numpy(), "grad_out": grads[n]}
            for n, m in layers.items() if n in grads}
