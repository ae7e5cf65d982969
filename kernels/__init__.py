"""archscan_kernels: exact generic ranks of the linear systems gradients give about a layer's input.

Installed from the repository's ``kernels/`` folder under the import name ``archscan_kernels``
(an unrelated PyPI distribution owns the name ``kernels``).  No torch import anywhere here.
"""
from .bounds import RankBound, generic_rank
from .conditioning import condition_number, conditioning, smallest_singular_values
from .conv_ops import channel_gradient_block, forward_matrix, gradient_matrix
from .conv_rank import ConvRanks, conv_ranks
from .geometry import ConvGeometry, covered_pixels
from .gfp import PRIMES
from .joint import JOINT_DENSE_MAX, Reader, joint_rank, max_batch
from .linear_rank import linear_geometry, linear_ranks
from .modp import rank_mod_p
from .relu import ReluStats, relu_stats

__all__ = [
    "JOINT_DENSE_MAX", "PRIMES", "ConvGeometry", "Reader", "joint_rank", "max_batch", "ConvRanks", "RankBound", "ReluStats", "channel_gradient_block",
    "condition_number", "conditioning", "conv_ranks", "covered_pixels", "forward_matrix", "generic_rank",
    "gradient_matrix", "linear_geometry", "linear_ranks", "rank_mod_p", "relu_stats",
    "smallest_singular_values",
]
