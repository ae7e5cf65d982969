"""Every layer rule, one tiny model each: conv -> OP -> conv -> flatten -> Linear(bias).

conv1 (1 -> 8 filters, 3x3, pad 1) on a 1x6x6 image: its gradient rows alone have rank 36 (8*9 rows
per channel >= 36 pixels; checked against a dense numpy rank below), so the image is determined
exactly when the gradient at conv1's output can be formed -- which is what each rule decides.
"""
import numpy as np
import pytest
import torch
from torch import nn

from archscan.api import scan
from archscan.config import ScanOptions


class _Net(nn.Module):
    def __init__(self, op, mid=8, side=6):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.op = op
        self.conv2 = nn.Conv2d(mid, 8, 3, padding=1)
        self.fc = nn.Linear(8 * side * side, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv2(self.op(self.conv1(x))), 1))


class _Cat(nn.Module):
    def forward(self, x):
        return torch.cat([x, x], 1)


class _Res(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return x + torch.tanh(self.inner(x))


CASES = [  # (op, conv2 input channels, side after op, expected image status)
    (nn.Identity(), 8, 6, "determined"),
    (nn.Tanh(), 8, 6, "determined"),
    (nn.Sigmoid(), 8, 6, "determined"),
    (nn.LeakyReLU(0.3), 8, 6, "determined"),
    (nn.Softplus(), 8, 6, "determined"),
    (nn.ELU(), 8, 6, "determined"),
    (nn.GELU(), 8, 6, "determined"),      # two pre-images: assumed resolved (conservative)
    (nn.SiLU(), 8, 6, "determined"),
    (nn.ReLU(), 8, 6, "determined"),      # sigma' from the output's sign pattern
    (nn.Hardsigmoid(), 8, 6, "determined"),  # ReLU6-like: sigma' from where the output saturates
    (nn.Hardswish(), 8, 6, "determined"),    # two pre-images: assumed resolved (conservative)
    (nn.Dropout(0.5), 8, 6, "determined"),
    (nn.ZeroPad2d(1), 8, 8, "determined"),        # every input value appears in the output
    (nn.ReflectionPad2d(1), 8, 8, "determined"),
    (nn.ChannelShuffle(2), 8, 6, "determined"),   # a permutation of the channels
    (nn.BatchNorm2d(8), 8, 6, "determined"),  # eval: a known affine map
    (nn.AvgPool2d(2), 8, 3, "determined"),    # linear: the gradient passes, conv1's K rows suffice
    # pooled after tanh: the pool's input is known only up to 216 of 288 directions, so sigma' (and
    # conv1's gradient rows) cannot be formed and rank W - d < 0 forward rows remain: the linear
    # chain stops (the nonlinear system may still determine it: --local measures that)
    (nn.Sequential(nn.Tanh(), nn.AvgPool2d(2)), 8, 3, "blocked"),
    (_Cat(), 16, 6, "determined"),
    # interpolation is a fixed linear map: upsampling reads every value (known output -> known input),
    # downsampling loses what it does not keep
    (nn.Upsample(scale_factor=2, mode="nearest"), 8, 12, "determined"),
    (nn.Upsample(scale_factor=2, mode="bilinear"), 8, 12, "determined"),
    (nn.Sequential(nn.Tanh(), nn.Upsample(scale_factor=0.5, mode="bilinear")), 8, 3, "blocked"),
    # x + tanh(inner(x)): the skip gives x only once the branch output is known, and the branch needs
    # x for its own sigma': a nonlinear fixed point the linear chain does not solve
    (_Res(), 8, 6, "blocked"),
]


def model_spec(model: nn.Module, name: str = "tiny_rules_extra") -> str:
    """Register ``model`` as module ``name``: the spec ``name:net`` scans it."""
    import sys
    mod = type(sys)(name)
    mod.net = model.eval()
    sys.modules[name] = mod
    return f"{name}:net"


@pytest.mark.parametrize("op, mid, side, expected", CASES, ids=[type(c[0]).__name__ + str(i) for i, c in enumerate(CASES)])
def test_rule_decides_what_passes(op, mid, side, expected):
    torch.manual_seed(0)
    net = _Net(op, mid, side).eval()
    import sys
    mod = type(sys)("tiny_rules_model")
    mod.net = net
    sys.modules["tiny_rules_model"] = mod
    rep = scan("tiny_rules_model:net", ScanOptions(input_shape=(1, 6, 6), local="off")).to_dict()
    assert rep["image"]["status"] == expected, rep["image"]
    assert rep["coverage"]["unsupported"] == 0
    if expected == "determined":
        assert rep["scores"]["verdict"] == "LEAKS"


def test_train_mode_batchnorm_costs_two_unknowns_per_channel():
    torch.manual_seed(0)
    import sys
    mod = type(sys)("tiny_bn_train")
    mod.net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 3, padding=1),
                            nn.Flatten(), nn.Linear(72, 3)).eval()
    sys.modules["tiny_bn_train"] = mod
    rep = scan("tiny_bn_train:net", ScanOptions(input_shape=(1, 6, 6), bn_mode="train")).to_dict()
    assert rep["threat_model"]["bn_mode"] == "train"
    conv2 = rep["layers"][1]
    assert conv2["attack"]["deficiency"] >= 0 and rep["image"]["status"] != "determined"


def test_conv1_gradient_rows_alone_determine_the_image():
    """The premise of the cases above, checked with a dense numpy rank of a float instance."""
    from archscan_kernels import ConvGeometry, gradient_matrix
    geom = ConvGeometry(1, 6, 6, 8, 3, 3, 1, 1, 1, 1)
    K = gradient_matrix(geom, np.random.default_rng(0).standard_normal((8, 6, 6)))
    assert np.linalg.matrix_rank(K) == 36


def test_pooling_before_the_first_parametric_layer_is_analysed():
    """The image reaches the first conv through a pool: the image is partial (what the pool loses),
    scored by the isotropic share, not a crash."""
    model = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(8 * 2 * 2, 3))
    report = scan(model_spec(model), ScanOptions(input_shape=(3, 4, 4), local="off")).to_dict()
    assert report["image"]["status"] == "partial" and report["image"]["deficiency"] == 48 - 12
    assert 0.0 < report["scores"]["chain"]["leakage_score"] < 1.0


class _HandLinear(nn.Module):
    """A Linear written by hand: x @ W.t() + b, addmm(b, x, W.t()), or F.linear(x, W, b)."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        self.w = nn.Parameter(torch.randn(3, 12) * 0.1)
        self.b = nn.Parameter(torch.zeros(3))

    def forward(self, x):
        x = torch.flatten(x, 1)
        if self.how == "matmul":
            return x @ self.w.t() + self.b
        if self.how == "addmm":
            return torch.addmm(self.b, x, self.w.t())
        return torch.nn.functional.linear(x, self.w, self.b)


@pytest.mark.parametrize("how", ["matmul", "addmm", "functional"])
def test_a_hand_written_linear_is_the_linear_layer(how):
    rep = scan(model_spec(_HandLinear(how)), ScanOptions(input_shape=(3, 2, 2), local="off")).to_dict()
    assert rep["coverage"]["unsupported"] == 0 and len(rep["layers"]) == 1
    assert rep["image"]["status"] == "determined" and rep["scores"]["verdict"] == "LEAKS"


class _Bilinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = torch.flatten(x, 1)
        return self.fc(h @ h.t() @ h)      # activations times activations: not a parametric layer


def test_a_product_of_activations_is_not_a_linear_layer():
    rep = scan(model_spec(_Bilinear()), ScanOptions(input_shape=(1, 2, 2), local="off")).to_dict()
    assert [l["type"] for l in rep["layers"]] == ["Linear"] and rep["coverage"]["unsupported"] == 0
    assert sum(n["kind"] == "product_matmul" for n in rep["nodes"]) == 2   # the attention family's product


def test_padding_same_is_the_equivalent_integer_padding():
    def net(padding):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=padding), nn.Conv2d(4, 2, 5, padding=padding), nn.Flatten(),
                             nn.Linear(2 * 36, 3))
    same = scan(model_spec(nn.Sequential(*net("same")), "pad_same"), ScanOptions(input_shape=(1, 6, 6), local="off")).to_dict()
    ints = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 2, 5, padding=2), nn.Flatten(), nn.Linear(72, 3))
    both = scan(model_spec(ints, "pad_int"), ScanOptions(input_shape=(1, 6, 6), local="off")).to_dict()
    assert same["coverage"]["unsupported"] == 0
    assert [(l["rank"], l["deficiency"], l["status"]) for l in same["layers"]] == \
           [(l["rank"], l["deficiency"], l["status"]) for l in both["layers"]]
    assert same["scores"]["chain"]["verdict"] == both["scores"]["chain"]["verdict"]


class _UnknownOp(nn.Module):
    """conv -> an op no family handles (cos) -> Linear head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.cos(self.conv(x)).flatten(1))


def test_an_unknown_op_follows_the_one_rule_and_is_named_in_the_verdict():
    from archscan.api import scan
    from archscan.config import ScanOptions
    from archscan.layers.flow import UNSUPPORTED, Transparent
    # never blocks values, gradients only once its output is known (as archscan's own nonlinearities)
    assert isinstance(UNSUPPORTED, Transparent) and UNSUPPORTED.value_for_gradient
    import sys
    sys.modules[__name__]._UnknownOp = _UnknownOp
    report = scan(f"{__name__}:_UnknownOp", ScanOptions(input_shape=(1, 6, 6), local="on")).to_dict()
    s = report["scores"]
    assert "1 op no layer family handles (cos)" in s["verdict_note"]
    assert "differentiated them exactly" in s["verdict_note"] and s["optimisation"]["status"] == "ran"
    assert any(f["rule_id"] == "AS100" and "cos" in f["message"] for f in report["findings"])
    # the Linear head with bias leaks cos(conv(x)): known values, so the gradient crosses to conv
    conv = next(l for l in report["layers"] if l["name"] == "conv")
    assert conv["attack"]["rows"] == "W+K"
    off = scan(f"{__name__}:_UnknownOp", ScanOptions(input_shape=(1, 6, 6), local="off")).to_dict()
    assert "nothing checked them: the verdict is not verified" in off["scores"]["verdict_note"]


class _Normed(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.norm = nn.LayerNorm(48) if how == "layer" else nn.GroupNorm(3, 3)
        self.fc = nn.Linear(48, 3)

    def forward(self, x):
        if self.how == "layer":
            return self.fc(self.norm(x.flatten(1)))
        if self.how == "functional":
            return self.fc(torch.nn.functional.layer_norm(x.reshape(x.shape[0], 3, 16), (16,)).flatten(1))
        return self.fc(self.norm(x).flatten(1))


def layer_norm():
    return _Normed("layer")


def functional_layer_norm():
    return _Normed("functional")


def group_norm():
    return _Normed("group")


@pytest.mark.parametrize("factory, lost", [("layer_norm", 2), ("functional_layer_norm", 2 * 3), ("group_norm", 2 * 3)])
def test_sample_norms_leave_two_unknowns_per_group(factory, lost):
    """The Linear head leaks the norm's output; the norm's input (the image) is then known up to
    each group's mean and scale: 2 directions per token (LayerNorm) or per group (GroupNorm)."""
    from archscan.api import scan
    from archscan.config import ScanOptions
    report = scan(f"{__name__}:{factory}", ScanOptions(input_shape=(3, 4, 4), local="off")).to_dict()
    assert report["coverage"]["unsupported"] == 0
    assert report["image"]["status"] == "partial" and report["image"]["deficiency"] == lost


class _Scaled(nn.Module):
    """The image scaled (by a number, a learned layer scale, or itself) before a leaking Linear head."""

    def __init__(self, how):
        super().__init__()
        self.how, self.gamma = how, nn.Parameter(torch.full((48,), 0.5))
        self.fc = nn.Linear(48, 3)

    def forward(self, x):
        x = x.flatten(1)
        x = {"number": lambda: x * 2.0, "layer_scale": lambda: x * self.gamma, "divide": lambda: x / 3.0,
             "square": lambda: x * x}[self.how]()
        return self.fc(x)


def scaled_number():
    return _Scaled("number")


def scaled_layer_scale():
    return _Scaled("layer_scale")


def scaled_divide():
    return _Scaled("divide")


def scaled_square():
    return _Scaled("square")


@pytest.mark.parametrize("factory", ["scaled_number", "scaled_layer_scale", "scaled_divide", "scaled_square"])
def test_products_by_known_factors_pass_values(factory):
    from archscan.api import scan
    from archscan.config import ScanOptions
    report = scan(f"{__name__}:{factory}", ScanOptions(input_shape=(3, 4, 4), local="off")).to_dict()
    assert report["coverage"]["unsupported"] == 0
    assert report["image"]["status"] == "determined"


def test_a_product_of_two_unknown_tensors_needs_the_other_factor():
    from archscan.layers.flow import KNOWN, PRODUCT, UNKNOWN, Val

    class Node:
        name, inputs, params = "u", ("x", "h"), {"operands": 2}

    class Ctx:
        def __init__(self, h):
            self.h = h

        def val(self, name):
            return Val(KNOWN) if name == "h" and self.h else Val(UNKNOWN)

    assert PRODUCT.back(Node, Val(KNOWN), Ctx(h=True)) == [("x", Val(KNOWN))]
    assert PRODUCT.back(Node, Val(KNOWN), Ctx(h=False)) == []
    assert PRODUCT.gradient_needs(Node, "x") == ("h",) and PRODUCT.gradient_needs(Node, "h") == ("x",)


class _FunctionalConv(nn.Module):
    """F.conv2d with parameter weights: the same parametric layer as nn.Conv2d."""

    def __init__(self, functional):
        super().__init__()
        self.functional = functional
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        if self.functional:
            x = torch.nn.functional.conv2d(x, self.conv.weight, self.conv.bias, stride=2, padding=1)
        else:
            x = self.conv(x)
        return self.fc(torch.tanh(x).flatten(1))


def functional_conv():
    return _FunctionalConv(True)


def module_conv():
    return _FunctionalConv(False)


def test_functional_conv_with_parameter_weights_is_the_module_layer():
    from archscan.api import scan
    from archscan.config import ScanOptions
    reports = [scan(f"{__name__}:{f}", ScanOptions(input_shape=(3, 8, 8), local="off")).to_dict()
               for f in ("functional_conv", "module_conv")]
    convs = [next(l for l in r["layers"] if l["type"] in ("conv2d", "Conv2d")) for r in reports]
    assert convs[0]["rows"] == convs[1]["rows"] and convs[0]["attack"] == convs[1]["attack"]
    assert reports[0]["scores"]["verdict"] == reports[1]["scores"]["verdict"]


class _ReshapeAs(nn.Module):
    """conv1's output reshaped like a second tensor computed from the image: only the first input's
    values follow from the output."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.side = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 36, 3)

    def forward(self, x):
        y = torch.tanh(self.conv1(x)).flatten(1)
        like = self.side(x).flatten(1)
        return self.fc(y.reshape_as(like).type_as(like))


def test_reshape_as_and_type_as_pass_values_to_their_first_input_only():
    from archscan.layers import REGISTRY
    assert REGISTRY.for_method("reshape_as").kind == REGISTRY.for_method("type_as").kind == "reshape_like"
    torch.manual_seed(0)
    rep = scan(model_spec(_ReshapeAs(), "tiny_reshape_as"), ScanOptions(input_shape=(1, 6, 6), local="off")).to_dict()
    assert rep["coverage"]["unsupported"] == 0
    assert {l["name"]: l["status"] for l in rep["layers"]}["conv1"] == "determined"
    # the flow: the output's value goes to the first input only, never to the tensor lending its shape
    from types import SimpleNamespace
    from archscan.layers.flow import FIRST_INPUT, KNOWN, Val
    node = SimpleNamespace(inputs=("y", "like"), name="out")
    assert FIRST_INPUT.back(node, Val(KNOWN), None) == [("y", Val(KNOWN))]


class _Token(nn.Module):
    """A learned class token expanded over the batch and concatenated before the head (ViT-style)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.token = nn.Parameter(torch.randn(1, 8))
        self.fc = nn.Linear(8 * 37, 3)

    def forward(self, x):
        y = torch.tanh(self.conv1(x)).flatten(2).transpose(1, 2)          # (N, 36, 8)
        t = self.token.expand(x.shape[0], -1).unsqueeze(1)                # (N, 1, 8)
        return self.fc(torch.cat([t, y], 1).flatten(1))


def test_an_expanded_class_token_is_handled_and_the_image_still_leaks():
    from archscan.layers import REGISTRY
    assert REGISTRY.for_method("expand").kind == REGISTRY.for_method("expand_as").kind == "expand"
    torch.manual_seed(0)
    rep = scan(model_spec(_Token(), "tiny_token"), ScanOptions(input_shape=(1, 6, 6), local="off")).to_dict()
    assert rep["coverage"]["unsupported"] == 0
    assert rep["image"]["status"] == "determined"


class _Select(nn.Module):
    """conv1's output (8 channels of 3x3 on a 6x6 image: 72 values about 36 pixels) read through a
    selection before conv2 (``keep`` channels)."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.conv1 = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        keep = {"slice1": 1, "halves": 8, "half": 4, "narrow": 4, "unbind_all": 8, "select0": 1}[how]
        self.conv2 = nn.Conv2d(keep, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 9, 3)

    def forward(self, x):
        y = torch.tanh(self.conv1(x))
        if self.how == "slice1":
            y = y[:, :1]
        elif self.how == "halves":
            u, v = y.chunk(2, dim=1)
            y = torch.cat([v, u], 1)
        elif self.how == "half":
            y, _ = torch.split(y, 4, dim=1)
        elif self.how == "narrow":
            y = y.narrow(1, 2, 4)
        elif self.how == "unbind_all":
            y = torch.cat([p.unsqueeze(1) for p in y.unbind(1)], 1)
        elif self.how == "select0":
            y = y.select(1, 0).unsqueeze(1)
        return self.fc(torch.flatten(torch.tanh(self.conv2(y)), 1))


@pytest.mark.parametrize("how, conv1_input", [
    # one channel of eight reaches conv2: conv1's output known on 9 of 72 entries, 9 W rows about
    # 36 pixels (and sigma' unknown where nothing reads): partial, never counted as all eight
    ("slice1", "partial"), ("select0", "partial"),
    # both halves of a chunk, or every piece of an unbind: together they are the whole tensor
    ("halves", "determined"), ("unbind_all", "determined"),
    # half of the channels: 36 of conv1's 72 W rows about 36 pixels (generically invertible), the
    # unread half's gradient zero: determined
    ("half", "determined"), ("narrow", "determined"),
])
def test_a_selection_determines_only_what_it_reads(how, conv1_input):
    torch.manual_seed(0)
    rep = scan(model_spec(_Select(how), f"tiny_select_{how}"), ScanOptions(input_shape=(1, 6, 6), local="off")).to_dict()
    assert rep["coverage"]["unsupported"] == 0
    status = {l["name"]: l for l in rep["layers"]}
    assert status["conv2"]["status"] == "determined"
    if conv1_input == "determined":
        assert rep["image"]["status"] == "determined"
    else:
        assert rep["image"]["status"] == "partial" and rep["image"]["deficiency"] == 36 - 9


def test_pieces_combine_exactly_when_disjoint_and_in_the_attackers_favour_when_not():
    import numpy as np
    from archscan.layers.flow import KNOWN, PARTIAL, UNKNOWN, Val, combine_parts
    a, b = np.arange(0, 6), np.arange(6, 10)
    assert combine_parts(12, [(a, Val(KNOWN)), (b, Val(KNOWN))]) == Val(PARTIAL, 2, aligned=True)   # 2 unread
    assert combine_parts(10, [(a, Val(KNOWN)), (b, Val(PARTIAL, 1))]) == Val(PARTIAL, 1, aligned=False)
    assert combine_parts(10, [(a, Val(KNOWN)), (b, Val(KNOWN))]) == Val(KNOWN)
    assert combine_parts(10, [(a, Val(UNKNOWN)), (b, Val(UNKNOWN))]) == Val()
    # overlapping pieces: each one's deficiency assumed resolved by the others (attacker-favourable)
    assert combine_parts(12, [(a, Val(PARTIAL, 3)), (np.arange(4, 10), Val(KNOWN))]) == Val(PARTIAL, 2, aligned=True)


def test_selection_spellings_share_one_family_and_shape_indexing_is_ignored():
    import operator
    from archscan.layers import REGISTRY
    assert REGISTRY.for_function(operator.getitem).family == "select"
    assert {REGISTRY.for_method(m).kind for m in ("chunk", "split", "unbind", "narrow", "select")} == \
        {"chunk", "split", "unbind", "narrow", "select"}
    assert REGISTRY.for_aten("aten.slice.Tensor").kind == "slice"
    assert REGISTRY.for_aten("aten.split_with_sizes.default").kind == "split"

    class _ShapeIndex(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.fc = nn.Linear(8 * 36, 3)

        def forward(self, x):
            y = self.conv1(x)
            half = y.shape[1] // 2          # getitem on a Size: shape arithmetic, not a selection
            return self.fc(torch.cat([y[:, :half], y[:, half:]], 1).flatten(1))

    torch.manual_seed(0)
    rep = scan(model_spec(_ShapeIndex(), "tiny_shape_index"), ScanOptions(input_shape=(1, 6, 6), local="off")).to_dict()
    assert rep["coverage"]["unsupported"] == 0 and rep["image"]["status"] == "determined"
    kinds = {n["kind"] for n in rep["nodes"]}
    assert "shape_arithmetic" in kinds and "getitem" in kinds


@pytest.mark.parametrize("how", ["slice1", "halves", "half", "unbind_all"])
def test_a_selection_in_a_pt2_program_reads_as_its_fx_trace(how, tmp_path):
    """The export path spells selections ``aten.slice``/``aten.split_with_sizes`` + ``getitem``:
    the same family, the same image status and deficiency as the fx trace."""
    torch.manual_seed(0)
    net = _Select(how).eval()
    fx_rep = scan(model_spec(net, f"tiny_select_pt2_{how}"), ScanOptions(input_shape=(1, 6, 6), local="off")).to_dict()
    path = tmp_path / f"{how}.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(1, 1, 6, 6),)), str(path))
    ex_rep = scan(str(path), ScanOptions(local="off")).to_dict()
    assert ex_rep["model"]["trace_method"] == "export" and ex_rep["coverage"]["unsupported"] == 0
    assert (ex_rep["image"]["status"], ex_rep["image"]["deficiency"]) == (fx_rep["image"]["status"], fx_rep["image"]["deficiency"])


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_traced_through_equals_the_module(batch_first, need_weights):
    from archscan.model.fxgraph import trace

    class _Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)

        def forward(self, x):
            y, w = self.attn(x, x, x, need_weights=need_weights)
            return y if w is None else y + w.sum()

    torch.manual_seed(0)
    block = _Block().eval()
    x = torch.randn(2, 5, 8) if batch_first else torch.randn(5, 2, 8)
    gm = trace(block)
    assert torch.allclose(gm(x), block(x), atol=1e-6)
    assert not any(n.op == "call_module" and n.target == "attn" for n in gm.graph.nodes)   # not one opaque call


class _TinyAttention(nn.Module):
    """Patches of a 6x6 image as 9 tokens of width 8, one attention (``how``), a residual and a head."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.patch = nn.Conv2d(1, 8, 2, stride=2)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(9 * 8, 3)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        if self.how == "mha":
            a = self.attn(t, t, t, need_weights=False)[0]
        else:
            q, k, v = nn.functional.linear(t, self.attn.in_proj_weight, self.attn.in_proj_bias).chunk(3, dim=-1)
            if self.how == "sdpa":
                a = nn.functional.scaled_dot_product_attention(q, k, v)
            else:
                a = torch.softmax(q @ k.transpose(-2, -1) / 8 ** 0.5, dim=-1) @ v
            a = self.attn.out_proj(a)
        return self.fc((t + a).flatten(1))


@pytest.mark.parametrize("how", ["mha", "sdpa", "matmul"])
def test_attention_is_handled_and_its_projections_are_parametric_layers(how):
    torch.manual_seed(0)
    rep = scan(model_spec(_TinyAttention(how), f"tiny_attention_{how}"), ScanOptions(input_shape=(1, 6, 6), local="off")).to_dict()
    assert rep["coverage"]["unsupported"] == 0
    names = [l["name"] for l in rep["layers"]]
    assert len(names) == len(set(names)) == 4          # patch, in-projection, out_proj, fc: distinct names
    assert any("out_proj" in n for n in names)
    if how == "mha":   # the in-projection's gradient rows are the layer's, not a constant's: named after the module
        assert names[1] == "attn.in_proj" and rep["layers"][1]["unknowns"] == 9 * 8
        assert [l["type"] for l in rep["layers"][1:3]] == ["Linear", "Linear"]
    assert rep["scores"]["verdict"] != "RESISTANT"


def _ctx(vals: dict, sizes: dict, consumers=None):
    from types import SimpleNamespace
    from archscan.layers.flow import Val
    return SimpleNamespace(val=lambda n: vals.get(n, Val()), size=lambda n: sizes[n],
                           consumers=lambda n: (consumers or {}).get(n, []), layer=lambda n: None)


def test_softmax_loses_one_direction_per_row_and_needs_its_output_for_the_gradient():
    from types import SimpleNamespace
    from archscan.layers.flow import KNOWN, PARTIAL, SOFTMAX, Val
    node = SimpleNamespace(name="s", inputs=("x",), in_shapes=((1, 2, 4, 6),), params={"dim": -1})
    assert SOFTMAX.back(node, Val(KNOWN), _ctx({}, {"x": 48})) == [("x", Val(PARTIAL, 8))]   # 2*4 rows
    assert SOFTMAX.gradient_needs(node, "x") == ("s",)


def test_a_product_of_activations_gives_a_factor_from_the_other_while_it_has_full_rank():
    from types import SimpleNamespace
    from archscan.layers.flow import KNOWN, MATMUL, PARTIAL, Val
    # scores = q @ k^T: q (1, 9, 4), k^T (1, 4, 9): p = 4 <= n = 9 and <= m = 9, both ways exact
    node = SimpleNamespace(name="c", inputs=("q", "kT"), in_shapes=((1, 9, 4), (1, 4, 9)), params={})
    ctx = _ctx({"kT": Val(KNOWN)}, {"q": 36, "kT": 36})
    assert MATMUL.back(node, Val(KNOWN), ctx) == [("q", Val(KNOWN))]
    assert MATMUL.back(node, Val(KNOWN), _ctx({}, {"q": 36, "kT": 36})) == []       # neither factor known
    # attn @ v: attn (1, 9, 9), v (1, 9, 4); v from attn when attn is known (p = 9 <= m = 9); attn
    # from v loses 9 - 4 directions per row (p = 9 > n = 4)
    node = SimpleNamespace(name="o", inputs=("attn", "v"), in_shapes=((1, 9, 9), (1, 9, 4)), params={})
    both = _ctx({"attn": Val(KNOWN), "v": Val(KNOWN)}, {"attn": 81, "v": 36})
    assert dict(MATMUL.back(node, Val(KNOWN), both)) == {"attn": Val(PARTIAL, 45), "v": Val(KNOWN)}
    assert MATMUL.gradient_needs(node, "v") == ("attn",)


def test_attention_gives_v_once_q_and_k_are_known():
    from types import SimpleNamespace
    from archscan.layers.flow import ATTENTION, KNOWN, Val
    node = SimpleNamespace(name="o", inputs=("q", "k", "v"), in_shapes=((1, 2, 9, 4),) * 3, params={})
    sizes = {"q": 72, "k": 72, "v": 72}
    assert ATTENTION.back(node, Val(KNOWN), _ctx({"q": Val(KNOWN)}, sizes)) == []
    assert ATTENTION.back(node, Val(KNOWN), _ctx({"q": Val(KNOWN), "k": Val(KNOWN)}, sizes)) == [("v", Val(KNOWN))]
    assert ATTENTION.gradient_needs(node, "v") == ("q", "k") and ATTENTION.gradient_needs(node, "q") == ("q", "k", "v")


class _RollPad(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(8 * 6 * 6, 3)

    def forward(self, x):
        y = torch.roll(torch.tanh(self.conv1(x)), shifts=(1, 2), dims=(2, 3))   # a shifted window (Swin)
        y = nn.functional.pad(y, (1, 1, 1, 1))
        return self.fc(torch.flatten(self.conv2(y), 1))


def test_roll_and_functional_pad_pass_values_and_gradients():
    torch.manual_seed(0)
    rep = scan(model_spec(_RollPad(), "tiny_roll_pad"), ScanOptions(input_shape=(1, 6, 6), local="off")).to_dict()
    assert rep["coverage"]["unsupported"] == 0
    assert {n["kind"] for n in rep["nodes"]} >= {"permute", "pad"}
    assert rep["image"]["status"] == "determined"
