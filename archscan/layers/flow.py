"""How knowledge crosses one op: the value lattice, and the flow objects the propagation fixpoint
(``archscan.analysis.propagate``) calls for every node.  A layer family declares its flow here;
the fixpoint has no special case for any kind.

A tensor's *value* is known, partly known (a deficiency of d directions, or known only on a ReLU's
active entries) or unknown; its *gradient* is known or not.  Going down (output -> inputs), a flow
says what its output's value tells about its inputs' values (``back``) and whether the attacker can
form its inputs' gradient from its output's gradient (``value_for_gradient``: an activation's
derivative is read off its output value, so the gradient crosses only once that value is known).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

KNOWN, PARTIAL, UNKNOWN = 2, 1, 0


@dataclass(frozen=True)
class Val:
    """What the attacker knows of a tensor's value."""

    level: int = UNKNOWN
    d: int = 0                 # deficiency when PARTIAL
    masked: bool = False       # known only where a ReLU is active
    aligned: bool = False      # the d unknown directions are whole entries (a selection left them out)

    def key(self):
        return (self.level, -self.d, not self.masked, self.aligned)


class Context(Protocol):
    """What a flow may ask of the propagation state."""

    bn_train: bool

    def val(self, name: str) -> Val: ...

    def size(self, name: str) -> int: ...

    def layer(self, name: str): ...

    def consumers(self, name: str) -> list: ...

    def parametric_input(self, node) -> Val: ...


class Flow:
    """Base flow: learns nothing about the inputs; values pass forward when every input is known."""

    name = "opaque"
    elementwise = False        # position-wise on values: the pull-back and feeds-ReLU walks may cross it
    linear = False             # ... and linear: the pull-back constraint stays linear across it
    value_for_gradient = False  # the input gradient needs this op's output value (sigma' read off it)
    contributes_gradient = True  # its reading of a tensor adds to that tensor's gradient
    parametric = False
    seeds_known = False        # its output is known before anything is propagated (a learned constant)
    masks = False              # forward rows survive only where its output is non-zero (ReLU)
    sum_of_inputs = False      # a learned tensor summed in has this op's gradient as its own (APRIL)
    is_loss = False            # the loss: its input's gradient is known (the label, or iDLG)
    unread_gradient_known = False  # an output nothing reads has gradient zero, which the attacker knows

    def back(self, node, out: Val, ctx: Context) -> list[tuple[str, Val]]:
        return []

    def gradient_needs(self, node, toward: str) -> tuple[str, ...]:
        """Tensors whose values the attacker needs to carry this op's output gradient to its input
        ``toward``: its own output when the derivative is read off it (``value_for_gradient``)."""
        return (node.name,) if self.value_for_gradient else ()

    def __repr__(self) -> str:
        return f"<flow {self.name}>"


class Transparent(Flow):
    """Values pass unchanged to every input (an invertible elementwise map or a relabelling)."""

    def back(self, node, out, ctx):
        return [(p, out) for p in node.inputs] if out.level != UNKNOWN else []


class Invertible(Transparent):
    """Elementwise, invertible, derivative a function of the output (tanh, sigmoid, LeakyReLU ...)."""

    name, elementwise, value_for_gradient = "invertible", True, True


class Ambiguous(Invertible):
    """Two pre-images for negative outputs (GELU, SiLU): assumed resolved (attacker-favourable)."""

    name = "ambiguous"


class Relu(Flow):
    """Forward rows only where active; the derivative is the output's sign pattern."""

    name, elementwise, value_for_gradient, masks = "relu", True, True, True

    def back(self, node, out, ctx):
        if out.level == UNKNOWN or not node.inputs:
            return []
        return [(node.inputs[0], Val(out.level, out.d, masked=out.level == KNOWN or out.masked, aligned=out.aligned))]


class Bijective(Transparent):
    """A linear bijection of the values (reshape, identity, eval-mode BatchNorm): values and
    gradients pass."""

    name, elementwise, linear = "bijective", True, True


class FirstInput(Bijective):
    """A bijection of its first input that reads the others only for their shape or dtype
    (``x.reshape_as(y)``, ``x.type_as(y)``): values pass to the first input alone."""

    name = "first_input"

    def back(self, node, out, ctx):
        return [(node.inputs[0], out)] if out.level != UNKNOWN and node.inputs else []


class Dropout(Bijective):
    """Identity at eval; at train its random mask is assumed known to the attacker (conservative)."""

    name = "dropout"


def lose(node, out: Val, lost: int, ctx: Context) -> list[tuple[str, Val]]:
    """The input known up to ``lost`` more directions than the output."""
    if out.level == UNKNOWN or not node.inputs:
        return []
    n_in = ctx.size(node.inputs[0])
    d = min(n_in, out.d + max(lost, 0))
    return [(node.inputs[0], Val(PARTIAL if d < n_in else UNKNOWN, d) if d else out)]


class Pool(Flow):
    """Many-to-one: the input is known up to (inputs - outputs) directions."""

    name = "pool"

    def back(self, node, out, ctx):
        return lose(node, out, ctx.size(node.inputs[0]) - node.out_size, ctx) if node.inputs else []


class Add(Flow):
    """u = x + h gives x = u - h once h is known (a skip raises the attacker's rank)."""

    name, sum_of_inputs = "add", True

    def back(self, node, out, ctx):
        if out.level == UNKNOWN:
            return []
        found = []
        for p in node.inputs:
            others = [ctx.val(q) for q in node.inputs if q != p]
            if all(o.level >= PARTIAL for o in others):
                d = out.d + sum(o.d for o in others)
                known = d == 0 and out.level == KNOWN and all(o.level == KNOWN for o in others)
                found.append((p, Val(KNOWN if known else PARTIAL, d)))
        return found


class Product(Flow):
    """u = x * h (or x / h): x = u / h once h is known (a non-zero factor, generic), and the
    gradient reaching x is du * h, so it needs h's value.  A scale by a number or by a learned
    constant (layer scale) is a bijection; a gate computed from the same tensor (squeeze-excitation)
    passes once the gate is known.  The same tensor on both sides (x * x) is treated like an
    activation with two pre-images, assumed resolved (attacker-favourable)."""

    name = "product"

    def back(self, node, out, ctx):
        if out.level == UNKNOWN:
            return []
        if node.params.get("operands", 1) > len(node.inputs):   # x * x
            return [(p, out) for p in node.inputs]
        return [(p, out) for p in node.inputs if all(ctx.val(q).level == KNOWN for q in node.inputs if q != p)]

    def gradient_needs(self, node, toward):
        if node.params.get("operands", 1) > len(node.inputs):
            return (node.name,)
        return tuple(q for q in node.inputs if q != toward)


class Cat(Flow):
    """Concatenation: each part's values and gradients pass."""

    name = "cat"

    def back(self, node, out, ctx):
        if out.level == UNKNOWN:
            return []
        return [(p, Val(out.level, min(out.d, ctx.size(p)), aligned=out.aligned)) for p in node.inputs]


class Part(Flow):
    """A selection: the output is some entries of the input (``x[:, :8]``, ``narrow``, ``select``)
    or one piece of a split (``chunk``, ``split``, ``unbind``).  What the attacker learns of the
    input combines every selection read from it: an entry no selection reads stays unknown, each
    piece brings its own deficiency.  The family records the flat entries of the input (batch 1)
    a node reads, ``params["entries"]``, and the input's size, ``params["universe"]``; a tuple
    item of an op that is not a split carries no entries and passes its value to the tuple.

    Disjoint pieces add up exactly: d = uncovered + sum of the pieces' deficiencies.  Overlapping
    ones are combined in the attacker's favour (each piece's deficiency assumed resolved by the
    others): d = entries no known or partly known piece reads.  Unknown entries are *aligned*
    unknowns (``Val.aligned``): a layer above knows all its rows but those entries' own, which
    ``usable_rank`` counts as rows rather than as lost directions."""

    name, linear = "part", True
    unread_gradient_known = True   # ``u, _ = x.chunk(2)``: the unused piece's gradient is zero

    def back(self, node, out, ctx):
        if not node.inputs or out.level == UNKNOWN:
            return []
        src = node.inputs[0]
        universe = part_of(node, ctx)[1]
        if universe is None:
            return [(src, out)]
        siblings = [(part_of(c, ctx), c) for c in ctx.consumers(src) if c.flow is self and c.inputs and c.inputs[0] == src]
        combined = combine_parts(universe, [(entries, ctx.val(c.name)) for (entries, u), c in siblings if u == universe])
        return [(src, combined)] if combined.level != UNKNOWN else []


def part_of(node, ctx) -> tuple:
    """(entries, universe) a selection reads of its input; (None, None) for an item of a tuple
    that is not a split."""
    if node.params.get("entries") is not None:
        return node.params["entries"], node.params["universe"]
    source = ctx.layer(node.inputs[0]).params if "item" in node.params else {}
    pieces = source.get("pieces")
    if pieces is None or not isinstance(node.params["item"], int) or not -len(pieces) <= node.params["item"] < len(pieces):
        return None, None
    return pieces[node.params["item"]], source["universe"]


def combine_parts(universe: int, parts: list) -> Val:
    """What the parts' values (``(entries, Val)`` each) tell about a tensor of ``universe`` entries."""
    seen = [(np.asarray(e), v) for e, v in parts if v.level != UNKNOWN]
    if not seen:
        return Val()
    read = np.concatenate([e for e, _ in seen])
    covered = np.unique(read).size
    disjoint = covered == read.size and covered == sum(e.size for e, _ in seen)
    partial = [v for _, v in seen if v.level == PARTIAL]
    d = universe - covered + (sum(v.d for v in partial) if disjoint else 0)
    masked = any(v.masked for _, v in seen)
    if d >= universe:
        return Val()
    if d == 0 and all(v.level == KNOWN for _, v in seen):
        return Val(KNOWN, masked=masked)
    return Val(PARTIAL, d, masked, aligned=all(v.aligned for v in partial) if disjoint else True)


class Pieces(Transparent):
    """A split into pieces (``chunk``, ``split``, ``unbind``): the tuple of pieces is the input
    relabelled; what its items (``Part``) learn reaches the input through it."""

    name, linear = "pieces", True


def _given(p: str, out: Val, lost: int, ctx: Context) -> tuple[str, Val]:
    """Input ``p`` known as well as the output, up to ``lost`` more directions."""
    n = ctx.size(p)
    d = min(n, out.d + max(lost, 0))
    return (p, out if d == 0 else Val(PARTIAL if d < n else UNKNOWN, d))


class MatMul(Flow):
    """c = a @ b of two activations (attention scores q @ k^T, attention times values): a = c b^+
    once b is known, exact while b has full row rank (p <= n, generic); b = a^+ c once a is known,
    while p <= m; past those ranks the shortfall is lost.  Each factor's gradient needs the other
    (da = dc b^T, db = a^T dc)."""

    name = "matmul"

    def back(self, node, out, ctx):
        if out.level == UNKNOWN or len(node.inputs) != 2 or len(node.in_shapes) != 2:
            return []
        (a, b), (sa, sb) = node.inputs, node.in_shapes
        if not sa or not sb or len(sa) < 2 or len(sb) < 2:
            return []
        m, p, n = sa[-2], sa[-1], sb[-1]
        found = []
        if ctx.val(b).level == KNOWN:      # every row of a loses p - n directions when p > n
            found.append(_given(a, out, ctx.size(a) // p * max(p - n, 0), ctx))
        if ctx.val(a).level == KNOWN:      # every column of b loses p - m
            found.append(_given(b, out, ctx.size(b) // p * max(p - m, 0), ctx))
        return [f for f in found if f[1].level != UNKNOWN]

    def gradient_needs(self, node, toward):
        return tuple(q for q in node.inputs if q != toward) or (node.name,)


class Softmax(Flow):
    """y = softmax(x) along a dimension: x = log y + c per row, so one direction per row is lost
    (the shift softmax cannot see); its derivative diag(y) - y y^T is read off the output."""

    name, value_for_gradient = "softmax", True

    def back(self, node, out, ctx):
        if not node.inputs or not node.in_shapes or not node.in_shapes[0]:
            return []
        shape = node.in_shapes[0]
        dim = node.params.get("dim", -1) % len(shape)
        rows = ctx.size(node.inputs[0]) // shape[dim] if shape[dim] else 0
        return lose(node, out, rows, ctx)


class Attention(Flow):
    """o = softmax(q k^T / sqrt(d) + mask) v (``scaled_dot_product_attention``): once q and k are
    known the attention matrix A is, and v = A^+ o (A is L x S with positive entries, full column
    rank while S <= L, generic).  Nothing about q or k follows from o alone.  v's gradient A^T do
    needs q and k; q's and k's need all three."""

    name = "attention"

    def back(self, node, out, ctx):
        if out.level == UNKNOWN or len(node.inputs) < 3:
            return []
        q, k, v = node.inputs[:3]
        if not (ctx.val(q).level == KNOWN and ctx.val(k).level == KNOWN):
            return []
        L, S = node.in_shapes[0][-2], node.in_shapes[1][-2]
        lost = (S - L) * ctx.size(v) // S if S > L else 0
        found = _given(v, out, lost, ctx)
        return [found] if found[1].level != UNKNOWN else []

    def gradient_needs(self, node, toward):
        if len(node.inputs) < 3:          # one tensor as q, k and v: its own value and the output's
            return tuple(node.inputs) + (node.name,)
        q, k, v = node.inputs[:3]
        return (q, k) if toward == v else (q, k, v)


class Parametric(Flow):
    """Linear / Conv2d: the layer's own system of forward and gradient rows about its input."""

    name, parametric = "parametric", True

    def back(self, node, out, ctx):
        v = ctx.parametric_input(node)
        return [(node.inputs[0], v)] if v.level != UNKNOWN and node.inputs else []


class Ignore(Flow):
    """Produces nothing the attack needs (shape queries, the output marker)."""

    name, contributes_gradient = "ignore", False


class Output(Flow):
    """The loss: the logits' gradient is known (label known, or inferred iDLG-style)."""

    name, is_loss = "output", True


class Input(Flow):
    name = "input"


class Constant(Flow):
    """A learned tensor the attacker knows (parameters and buffers read as values)."""

    name, seeds_known = "constant", True


class Fresh(Flow):
    """A new tensor shaped like its input (``x.new_zeros(...)``, ``zeros_like``): a constant the
    attacker knows, reading its input for shape and dtype only."""

    name, seeds_known, contributes_gradient = "fresh", True, False


class Unsupported(Transparent):
    """An op no family handles.  The one rule for what archscan does not know: it never blocks the
    chain (values pass to its inputs, as through a bijection), never drops a parameter's gradient
    rows (a parametric layer below it keeps its own system), and never lets a gradient cross it
    more easily than archscan's own nonlinearities do (only once its output value is known).  The
    chain view is then an approximation at that op -- named (AS100) and stated in the verdict note
    -- while the optimisation view differentiates the op exactly through autograd."""

    name, value_for_gradient = "unsupported", True


INVERTIBLE, AMBIGUOUS, RELU, BIJECTIVE, DROPOUT = Invertible(), Ambiguous(), Relu(), Bijective(), Dropout()
FIRST_INPUT = FirstInput()
POOL, ADD, CAT, PARAMETRIC, IGNORE = Pool(), Add(), Cat(), Parametric(), Ignore()
PRODUCT = Product()
PART, PIECES = Part(), Pieces()
MATMUL, SOFTMAX, ATTENTION = MatMul(), Softmax(), Attention()
OUTPUT, INPUT, CONSTANT, UNSUPPORTED = Output(), Input(), Constant(), Unsupported()
FRESH = Fresh()
