"""Crafted .pt2 archives for the safety tests: payloads, archive rewriting and the attack cases.

Every payload only creates a marker file under pytest's tmp_path, so a test can tell whether it
ran.  Each builder takes (legit archives, tmp dir, marker, planted module name) and returns the
path of a crafted archive; CASES lists them with the entry and reason the loader must give.
"""
from __future__ import annotations

import copy
import io
import json
import os
import pickle
import shlex
import sys
import uuid
import zipfile
from pathlib import Path

import pytest
import torch

from archscan.model.pt2 import UnsafeArchiveError, load_program_safely


class SystemPayload:
    """Unpickling this runs ``touch <marker>`` through os.system."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


class ExecPayload:
    """Unpickling this runs Python code (builtins.exec) that writes the marker."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def rewrite(src: Path, dst: Path, *, edit_json=None, replace=None, add=None, drop=()):
    """Copy a .pt2, editing entries (names relative to the archive's top-level folder)."""
    with zipfile.ZipFile(src) as zin:
        root = zin.namelist()[0].split("/")[0]
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
            for info in zin.infolist():
                rel = info.filename.split("/", 1)[1]
                if rel in drop:
                    continue
                data = zin.read(info)
                if replace and rel in replace:
                    data = replace[rel]
                if edit_json and rel in edit_json:
                    doc = json.loads(data)
                    edit_json[rel](doc)
                    data = json.dumps(doc).encode()
                zout.writestr(f"{root}/{rel}", data)
            for rel, data in (add or {}).items():
                zout.writestr(f"{root}/{rel}", data)
    return dst


def read_json(path: Path, rel: str):
    with zipfile.ZipFile(path) as z:
        root = z.namelist()[0].split("/")[0]
        return json.loads(z.read(f"{root}/{rel}"))


def json_replace(doc: dict, old: str, new: str) -> None:
    text = json.dumps(doc)
    assert old in text
    fresh = json.loads(text.replace(old, new))
    doc.clear()
    doc.update(fresh)


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "PAYLOAD_RAN"
    assert not m.exists()
    return m


@pytest.fixture
def evil_module(tmp_path, monkeypatch, marker):
    """A module an attacker planted next to the model (e.g. the scanned repo, on sys.path)."""
    name = f"evil_{uuid.uuid4().hex[:12]}"
    d = tmp_path / "planted"
    d.mkdir()
    (d / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n"
        "import torch\n"
        "class F:\n"
        "    @staticmethod\n"
        "    def apply(*a):\n"
        "        return torch.zeros(2, 3)\n"
        "class E:\n"
        "    pass\n")
    monkeypatch.syspath_prepend(str(d))
    yield name
    sys.modules.pop(name, None)


# Each builder: (legit archives, tmp dir, marker, evil module name) -> crafted path.

def build_weight_pickle(legit, tmp, marker, _mod):
    src = legit["conv"][0]
    cfg = read_json(src, "data/weights/model_weights_config.json")
    path_name = cfg["config"]["fc.weight"]["path_name"]

    def edit(doc):
        doc["config"]["fc.weight"]["use_pickle"] = True
    return rewrite(src, tmp / "weight_pickle.pt2",
                   edit_json={"data/weights/model_weights_config.json": edit},
                   replace={f"data/weights/{path_name}": torch_bytes(SystemPayload(marker))})


def build_constant_pickle(legit, tmp, marker, _mod):
    src = legit["constant"][0]
    cfg = read_json(src, "data/constants/model_constants_config.json")
    (fqn, meta), = cfg["config"].items()

    def edit(doc):
        doc["config"][fqn]["use_pickle"] = True
    return rewrite(src, tmp / "constant_pickle.pt2",
                   edit_json={"data/constants/model_constants_config.json": edit},
                   replace={f"data/constants/{meta['path_name']}": torch_bytes(ExecPayload(marker))})


def build_opaque_object(legit, tmp, marker, _mod):
    src = legit["constant"][0]

    def edit(doc):
        doc["config"]["evil"] = {"path_name": "opaque_obj_0", "is_param": False,
                                 "use_pickle": True, "tensor_meta": None}
    return rewrite(src, tmp / "opaque.pt2",
                   edit_json={"data/constants/model_constants_config.json": edit},
                   add={"data/constants/opaque_obj_0": pickle.dumps(SystemPayload(marker))})


def build_custom_object(legit, tmp, marker, _mod):
    src = legit["constant"][0]

    def edit(doc):
        doc["config"]["evil"] = {"path_name": "custom_obj_0", "is_param": False,
                                 "use_pickle": True, "tensor_meta": None}
    return rewrite(src, tmp / "custom_obj.pt2",
                   edit_json={"data/constants/model_constants_config.json": edit},
                   add={"data/constants/custom_obj_0": pickle.dumps(SystemPayload(marker))})


def build_custom_object_config_only(legit, tmp, marker, _mod):
    """The config points at a custom_obj_ path, but under an innocent entry name."""
    src = legit["constant"][0]
    cfg = read_json(src, "data/constants/model_constants_config.json")
    (fqn, meta), = cfg["config"].items()

    def edit(doc):
        doc["config"][fqn]["path_name"] = "custom_obj_0"
    return rewrite(src, tmp / "custom_cfg.pt2",
                   edit_json={"data/constants/model_constants_config.json": edit})


def build_sample_inputs(legit, tmp, marker, _mod):
    src = legit["conv"][0]
    return rewrite(src, tmp / "sample_inputs.pt2",
                   replace={"data/sample_inputs/model.pt":
                            torch_bytes(((SystemPayload(marker),), {}))})


def build_legacy_zip(legit, tmp, marker, _mod):
    from torch._export.serde.schema import SCHEMA_VERSION
    program = json.dumps(read_json(legit["conv"][0], "models/model.json"))
    path = tmp / "legacy.pt2"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
        z.writestr("serialized_exported_program.json", program)
        z.writestr("serialized_state_dict.pt", torch_bytes(SystemPayload(marker)))
        z.writestr("serialized_constants.pt", torch_bytes({}))
        z.writestr("serialized_example_inputs.pt", torch_bytes(((torch.randn(1, 3, 8, 8),), {})))
    return path


def build_target_os_system(legit, tmp, marker, _mod):
    def edit(doc):
        doc["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"
    return rewrite(legit["constant"][0], tmp / "os_system.pt2",
                   edit_json={"models/model.json": edit})


def build_target_import(legit, tmp, marker, mod):
    """A target torch's verifier *accepts*: it imports a module named in the graph and calls it."""
    def edit(doc):
        g = doc["graph_module"]["graph"]
        g["nodes"].insert(0, {
            "target": "torch.export.custom_ops._call_custom_autograd_function_in_pre_dispatch",
            "inputs": [{"name": "function_cls_name", "arg": {"as_string": f"{mod}.F"},
                        "kind": 1}],
            "outputs": [{"as_tensor": {"name": "pwn"}}], "metadata": {}, "name": "pwn"})
        g["tensor_values"]["pwn"] = copy.deepcopy(g["tensor_values"]["x"])
    return rewrite(legit["constant"][0], tmp / "import_target.pt2",
                   edit_json={"models/model.json": edit})


def build_aoti(legit, tmp, marker, _mod):
    return rewrite(legit["conv"][0], tmp / "aoti.pt2",
                   add={"data/aotinductor/model/": b"",
                        "data/aotinductor/model/model.so": b"\x7fELF not really"})


def build_sympy_eval(legit, tmp, marker, _mod):
    sym = "Symbol('s77', positive=True, integer=True)"

    def edit(doc):
        json_replace(doc, sym, f"__import__('os').system('touch {marker}') or {sym}")
    src = legit["dynamic"][0]
    assert sym in json.dumps(read_json(src, "models/model.json"))
    return rewrite(src, tmp / "sympy.pt2", edit_json={"models/model.json": edit})


def build_name_injection(legit, tmp, marker, _mod):
    """An input name becomes a default argument in FX's generated forward(): runs at load."""
    def edit(doc):
        json_replace(doc, '"x"', json.dumps(f"x=__import__('os').system('touch {marker}')"))
    return rewrite(legit["constant"][0], tmp / "name.pt2", edit_json={"models/model.json": edit})


def build_guards_code(legit, tmp, marker, _mod):
    def edit(doc):
        doc["guards_code"] = [f"__import__('os').system('touch {marker}') == 0"]
    return rewrite(legit["constant"][0], tmp / "guards.pt2", edit_json={"models/model.json": edit})


def build_treespec_enum(legit, tmp, marker, mod):
    def edit(doc):
        sig = doc["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(sig["in_spec"])
        spec[1]["children_spec"][1]["context"] = json.dumps(
            [{"__enum__": True, "fqn": f"{mod}:E", "name": "A"}])
        sig["in_spec"] = json.dumps(spec)
    return rewrite(legit["constant"][0], tmp / "enum.pt2", edit_json={"models/model.json": edit})


# (builder, expected entry, expected reason fragment, demo: how plain torch runs it or None)
CASES = {
    "a_weight_use_pickle": (
        build_weight_pickle, "data/weights/model_weights_config.json",
        "marks 'fc.weight' use_pickle (a pickled object, which would run code on load)", "load"),
    "b_constant_use_pickle": (
        build_constant_pickle, "data/constants/model_constants_config.json",
        "marks 'k' use_pickle (a pickled object", "load"),
    "c1_opaque_object": (
        build_opaque_object, "data/constants/opaque_obj_0",
        "is an opaque-object constant, which torch unpickles with pickle.loads", "load"),
    "c2_custom_object": (
        build_custom_object, "data/constants/custom_obj_0",
        "is a custom (TorchScript) object constant", None),
    "c3_custom_object_config": (
        build_custom_object_config_only, "data/constants/model_constants_config.json",
        "makes 'k' a custom (TorchScript) object", None),
    "d_example_inputs": (
        build_sample_inputs, "data/sample_inputs/model.pt",
        "does not load with torch.load(weights_only=True) (it references posix.system); "
        "torch would retry with weights_only=False", "load"),
    "e_legacy_zip": (
        build_legacy_zip, "version", "legacy (pre-2.7) torch.export zip format", "load"),
    "f1_target_torch_os_system": (
        build_target_os_system, "models/model.json",
        "node 'mul' calls 'torch.os.system', which is not a plain operator", None),
    "f2_target_verifier_allows_import": (
        build_target_import, "models/model.json",
        "calls 'torch.export.custom_ops._call_custom_autograd_function_in_pre_dispatch', which "
        "is not a plain operator", "run"),
    "g_aotinductor": (
        build_aoti, "data/aotinductor/model/", "is an AOTInductor payload", "aoti"),
    "j_sympy_eval": (
        build_sympy_eval, "models/model.json",
        "that is not a plain shape formula", "load"),
    "k_fx_name_injection": (
        build_name_injection, "models/model.json",
        "that is not a plain Python identifier (torch pastes it into generated Python code)",
        "load"),
    "l_guards_code": (
        build_guards_code, "models/model.json",
        "that is not a plain shape guard", "run"),
    "m_treespec_enum_import": (
        build_treespec_enum, "models/model.json",
        "has an in_spec that has an enum context, which makes torch import the module", "load"),
}


def refused(path, fragment, **kw):
    with pytest.raises(UnsafeArchiveError) as info:
        load_program_safely(str(path), **kw)
    msg = str(info.value)
    assert fragment in msg, msg
    assert "\n" not in msg and msg.startswith(f"{path}: ")
    return msg
