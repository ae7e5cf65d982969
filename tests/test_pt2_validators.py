"""The validators of the safe .pt2 loader on their own: operator targets, sympy shape
expressions and guards_code, accepted and refused."""
from __future__ import annotations

import pytest

from archscan.model.pt2.expressions import check_guard_code, check_sympy_expr
from archscan.model.pt2.targets import check_target

# ---------------------------------------------------------------------------------------------
# Validators on their own
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [
    "torch.ops.aten.conv2d.default", "torch.ops.aten.relu_.default", "torch.ops.aten.sym_size.int",
    "torch.ops.aten._native_batch_norm_legit_no_training.default", "torch.ops.higher_order.cond",
    "torch.ops.prims.convert_element_type.default", "_operator.getitem", "_operator.floordiv",
    "math.trunc", "torch.sym_float", "torch.sym_max"])
def test_targets_allowed(t):
    assert check_target(t) is None


@pytest.mark.parametrize("t", [
    "torch.os.system", "torch.load", "torch.ops.aten.__class__", "os.system", "builtins.eval",
    "torch.ops.higher_order.call_torchbind", "_operator.attrgetter", "math.__dict__",
    "torch.ops.aten.save.default", "torch.ops.aten.from_file.default", "torch.ops.aten", "#ns.op", "torch.ops.aten.conv2d.default.extra", 42, "torch.export."
    "custom_ops._call_custom_autograd_function_in_pre_dispatch", "torch._dynamo.eval_frame"])
def test_targetsrefused(t):
    assert check_target(t) is not None


@pytest.mark.parametrize("e", [
    "Symbol('s77', positive=True, integer=True)",
    "FloorDiv(Symbol('s0', positive=True, integer=True), Integer(2))",
    "FloatTrueDiv(ToFloat(Symbol('s77', positive=True, integer=True)), Float('3.0', precision=53))",
    "Max(Integer(1), Mul(Integer(6), Symbol('s1')))", "Integer(-3)", "oo", "-oo",
    "StrictLessThan(Symbol('u0', integer=True), Integer(5))", "Pow(Symbol('s0'), Integer(2))",
    "s0 + 2*s1", " + ".join(["Pow(Symbol('s0'), Integer(2))"] * 40)])
def test_sympy_allowed(e):
    assert check_sympy_expr(e) is None


@pytest.mark.parametrize("e", [
    "__import__('os').system('id')", "Symbol('x').__class__", "eval('1')",
    "Max('__import__(\"os\")', 1)", "Symbol('a b')", "lambda: 1", "[1][0]",
    "Pow(Integer(10), Integer(1000000000))", "sympify('1')", "Integer(2)**Integer(999999)",
    "Symbol('s0',\n integer=True)", "Function('f')(1)",
    "Pow(Pow(Pow(Pow(Integer(10), Integer(64)), Integer(64)), Integer(64)), Integer(64))",
    "Float('1.0', precision=100000000)"])
def test_sympyrefused(e):
    assert check_sympy_expr(e) is not None


@pytest.mark.parametrize("g", [
    "L['x'].size()[0] > 4", "((6*L['x'].size()[0]) % (L['x'].size()[0] // 2)) == 0",
    "max(1, 6*(L['x'].size()[0] // 2)) == 6", "L['x'].stride()[0] == 1",
    "L['kwargs']['y'].size()[1] <= 1024", "math.isnan(L['f'])", "L['s'] == 'abc'"])
def test_guards_allowed(g):
    assert check_guard_code(g) is None


@pytest.mark.parametrize("g", [
    "__import__('os').system('id') == 0", "L['x'].__class__", "torch.load('f')",
    "getattr(L, 'x')", "L['x'] == \"it's\"", "L['x'].size()[0] > 4\nimport os",
    "L[__import__('os')]", "open('f')", "(lambda: 0)() == 0"])
def test_guardsrefused(g):
    assert check_guard_code(g) is not None
