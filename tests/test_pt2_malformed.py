"""The safe .pt2 loader on malformed archives, zip bombs and size caps: each is refused with a
one-line message that names the file and, where one is to blame, the entry."""
from __future__ import annotations

import json
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from pt2_crafting import (
    SystemPayload,
    json_replace,
    marker,  # noqa: F401 (a fixture)
    read_json,
    refused,
    rewrite,
    torch_bytes,
)
from pt2_models import legit  # noqa: F401 (a fixture)

from archscan.model.pt2 import default_max_bytes, inspect_archive

# ---------------------------------------------------------------------------------------------
# (h) malformed archives
# ---------------------------------------------------------------------------------------------


def test_not_a_zip(tmp_path):
    p = tmp_path / "model.pt2"
    p.write_text("def forward(x): return x\n")
    refused(p, "refused: is not a zip archive")


def test_empty_file(tmp_path):
    p = tmp_path / "model.pt2"
    p.write_bytes(b"")
    refused(p, "refused: is empty")


def test_missing_file_and_directory(tmp_path):
    refused(tmp_path / "nope.pt2", "refused: no such file")
    d = tmp_path / "dir.pt2"
    d.mkdir()
    refused(d, "refused: is a directory")


def test_truncated_zip(legit, tmp_path):
    data = legit["conv"][0].read_bytes()
    p = tmp_path / "truncated.pt2"
    p.write_bytes(data[: len(data) // 2])
    refused(p, "refused: is a truncated or damaged zip archive")


def test_truncated_inside_entry_data(legit, tmp_path):
    """Central directory intact but an entry's data region cut away."""
    src = legit["conv"][0]
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        big = max(z.infolist(), key=lambda i: i.file_size)
        start = big.header_offset
    first_cd = data.find(b"PK\x01\x02")        # keep the central directory, drop entry data
    p = tmp_path / "chopped.pt2"
    p.write_bytes(bytes(data[:start + 10]) + bytes(data[first_cd:]))
    refused(p, "refused:")


def test_multi_disk_zip_record(legit, tmp_path):
    """A zip64 locator claiming two disks: zipfile.is_zipfile raises instead of saying False."""
    data = legit["conv"][0].read_bytes()
    eocd = data.rfind(b"PK\x05\x06")
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, 0, 2)
    p = tmp_path / "disks.pt2"
    p.write_bytes(data[:eocd] + locator + data[eocd:])
    refused(p, "refused: is a damaged zip archive (zipfiles that span multiple disks")


@pytest.mark.parametrize("rel, fragment", [
    ("archive_version", "archive_version is missing"),
    ("archive_format", "archive_format is missing"),
    (".data/version", ".data/version is missing"),
    ("models/model.json", "models/model.json is missing"),
    ("data/weights/model_weights_config.json", "model_weights_config.json is missing"),
    ("data/constants/model_constants_config.json", "model_constants_config.json is missing"),
    ("data/sample_inputs/model.pt", "data/sample_inputs/model.pt is missing"),
])
def test_missing_entries(legit, tmp_path, rel, fragment):
    p = rewrite(legit["conv"][0], tmp_path / "missing.pt2", drop={rel})
    refused(p, fragment)


def test_missing_weight_payload(legit, tmp_path):
    cfg = read_json(legit["conv"][0], "data/weights/model_weights_config.json")
    pn = cfg["config"]["fc.weight"]["path_name"]
    p = rewrite(legit["conv"][0], tmp_path / "m.pt2", drop={f"data/weights/{pn}"})
    refused(p, f"entry 'fc.weight' points at missing entry data/weights/{pn}")


@pytest.mark.parametrize("rel", ["models/model.json", "data/weights/model_weights_config.json",
                                 "data/constants/model_constants_config.json"])
def test_bad_json(legit, tmp_path, rel):
    p = rewrite(legit["conv"][0], tmp_path / "badjson.pt2", replace={rel: b'{"config": [1, 2'})
    refused(p, f"refused: {rel} is not valid JSON")


def test_non_utf8_json(legit, tmp_path):
    p = rewrite(legit["conv"][0], tmp_path / "bin.pt2", replace={"models/model.json": b"\xff\xfe{}"})
    refused(p, "models/model.json is not UTF-8 text")


def test_wrong_archive_version_and_format(legit, tmp_path):
    p = rewrite(legit["conv"][0], tmp_path / "v.pt2", replace={"archive_version": b"7"})
    refused(p, "archive_version is b'7'")
    p = rewrite(legit["conv"][0], tmp_path / "f.pt2", replace={"archive_format": b"zip"})
    refused(p, "archive_format is b'zip', not b'pt2'")


def test_duplicate_entry(legit, tmp_path, marker):
    src = legit["conv"][0]
    with zipfile.ZipFile(src) as z:
        root = z.namelist()[0].split("/")[0]
    p = tmp_path / "dup.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rewrite(src, p, add={"data/sample_inputs/model.pt": torch_bytes(((SystemPayload(marker),), {}))})
    refused(p, f"refused: {root}/data/sample_inputs/model.pt appears twice")
    assert not marker.exists()


def test_entries_outside_root_folder(legit, tmp_path):
    p = rewrite(legit["conv"][0], tmp_path / "r.pt2")
    with zipfile.ZipFile(p, "a") as z:
        z.writestr("other/models/model.json", b"{}")
    refused(p, "is outside the archive's top-level folder")


def test_path_traversal_name(legit, tmp_path):
    p = rewrite(legit["conv"][0], tmp_path / "t.pt2")
    with zipfile.ZipFile(p, "a") as z:
        root = z.namelist()[0].split("/")[0]
        z.writestr(f"{root}/../../etc/passwd", b"x")
    refused(p, "refused:")


def test_unknown_entry(legit, tmp_path):
    p = rewrite(legit["conv"][0], tmp_path / "u.pt2", add={"data/weights/payload.bin": b"x"})
    refused(p, "data/weights/payload.bin is not an entry torch.export.save writes")


def test_legacy_weights_blob(legit, tmp_path, marker):
    p = rewrite(legit["conv"][0], tmp_path / "lw.pt2",
                add={"data/weights/model.pt": torch_bytes(SystemPayload(marker))})
    refused(p, "data/weights/model.pt is a legacy weights/constants blob")
    assert not marker.exists()


@pytest.mark.demo
def test_demo_legacy_weights_blob_runs_with_plain_torch(legit, tmp_path, marker):
    p = rewrite(legit["conv"][0], tmp_path / "lw.pt2",
                add={"data/weights/model.pt": torch_bytes(SystemPayload(marker))})
    try:
        torch.export.load(str(p))
    except Exception:
        pass
    assert marker.exists()


def test_use_pickle_truthy_non_bool(legit, tmp_path):
    def edit(doc):
        doc["config"]["fc.weight"]["use_pickle"] = "no"   # truthy: torch would unpickle
    p = rewrite(legit["conv"][0], tmp_path / "t.pt2",
                edit_json={"data/weights/model_weights_config.json": edit})
    refused(p, "marks 'fc.weight' use_pickle")


def test_zero_byte_weight_declaring_huge_tensor(legit, tmp_path):
    """A 0-byte weight file makes torch allocate torch.zeros(sizes)."""
    cfg = read_json(legit["conv"][0], "data/weights/model_weights_config.json")
    pn = cfg["config"]["fc.weight"]["path_name"]

    def edit(doc):
        doc["config"]["fc.weight"]["tensor_meta"]["sizes"] = [{"as_int": 1 << 20}, {"as_int": 1 << 20}]
    p = rewrite(legit["conv"][0], tmp_path / "z.pt2",
                edit_json={"data/weights/model_weights_config.json": edit},
                replace={f"data/weights/{pn}": b""})
    refused(p, "declares a tensor larger than the")


def test_path_name_traversal_in_config(legit, tmp_path):
    def edit(doc):
        doc["config"]["fc.weight"]["path_name"] = "../../models/model.json"
    p = rewrite(legit["conv"][0], tmp_path / "pn.pt2",
                edit_json={"data/weights/model_weights_config.json": edit})
    refused(p, "points at '../../models/model.json', not a weight_<n> tensor file")


def test_extension_operator_and_unknown_namespace(legit, tmp_path):
    for tgt, frag in [("#custom_ns.op", "extension operator"),
                      ("torch.ops.evil.op.default", "operator namespace 'evil'"),
                      ("torch.ops.aten.__class__", "dunder"),
                      ("_operator.call", "not one of the allowed _operator functions")]:
        def edit(doc, tgt=tgt):
            doc["graph_module"]["graph"]["nodes"][0]["target"] = tgt
        p = rewrite(legit["constant"][0], tmp_path / "t.pt2", edit_json={"models/model.json": edit})
        refused(p, frag)


def test_extra_namespace_opt_in(legit, tmp_path):
    def edit(doc):
        doc["graph_module"]["graph"]["nodes"][0]["target"] = "torch.ops.torchvision.nms.default"
    p = rewrite(legit["constant"][0], tmp_path / "t.pt2", edit_json={"models/model.json": edit})
    refused(p, "operator namespace 'torchvision'")
    report = inspect_archive(str(p), extra_op_namespaces={"torchvision"})
    assert "torch.ops.torchvision.nms.default" in report.targets["model"]


def test_getattr_target_injection_in_subgraph_name(legit, tmp_path):
    """as_graph names become get_attr targets pasted into generated code."""
    def edit(doc):
        json_replace(doc, '"true_graph_0"', json.dumps('t")or __import__("os")or("'))
    p = rewrite(legit["cond"][0], tmp_path / "g.pt2", edit_json={"models/model.json": edit})
    refused(p, "is not a plain Python identifier")


def test_forward_arg_names_injection(legit, tmp_path):
    def edit(doc):
        doc["graph_module"]["module_call_graph"][0]["signature"]["forward_arg_names"] = \
            ["x=__import__('os')"]
    p = rewrite(legit["constant"][0], tmp_path / "f.pt2", edit_json={"models/model.json": edit})
    refused(p, "forward argument name")


@pytest.mark.parametrize("value", [5, "x", {"x": 1}])
def test_malformed_forward_arg_names(legit, tmp_path, value):
    """Not a list: refused like any other malformed value (it used to escape as a TypeError)."""
    def edit(doc):
        doc["graph_module"]["module_call_graph"][0]["signature"]["forward_arg_names"] = value
    p = rewrite(legit["constant"][0], tmp_path / "f.pt2", edit_json={"models/model.json": edit})
    refused(p, "refused: models/model.json has a malformed forward_arg_names")


def test_defaultdict_treespec(legit, tmp_path):
    def edit(doc):
        sig = doc["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(sig["in_spec"])
        spec[1]["children_spec"][1]["type"] = "collections.defaultdict"
        sig["in_spec"] = json.dumps(spec)
    p = rewrite(legit["constant"][0], tmp_path / "dd.pt2", edit_json={"models/model.json": edit})
    refused(p, "names a defaultdict")


# ---------------------------------------------------------------------------------------------
# (i) zip bombs and size caps
# ---------------------------------------------------------------------------------------------


def _write_zip(path: Path, entries):
    """Minimal zip writer: entries = [(name, method, crc, compressed bytes, uncompressed size)]."""
    central = []
    with open(path, "wb") as f:
        for name, method, crc, payload, usize in entries:
            off = f.tell()
            n = name.encode()
            f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc,
                                len(payload), usize, len(n), 0))
            f.write(n)
            f.write(payload)
            central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0,
                                       0x21, crc, len(payload), usize, len(n), 0, 0, 0, 0, 0,
                                       off) + n)
        cd_off = f.tell()
        for c in central:
            f.write(c)
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central),
                            f.tell() - cd_off, cd_off, 0))


def _deflated_zeros(total: int, chunk: int = 1 << 20) -> tuple[bytes, int]:
    """A valid raw-deflate stream of ``total`` zero bytes, built without compressing them all:
    after Z_FULL_FLUSH the compressor state is reset, so every 1 MiB block compresses to the
    same bytes and can simply be repeated."""
    assert total % chunk == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush(zlib.Z_FINISH)
    crc = 0
    zeros = bytes(chunk)
    for _ in range(total // chunk):
        crc = zlib.crc32(zeros, crc)
    return block * (total // chunk) + tail, crc


@pytest.fixture(scope="session")
def bomb(legit, tmp_path_factory):
    """A ~3 MB archive: the conv model plus a 3 GB (declared and real) deflated entry."""
    src = legit["conv"][0]
    entries = []
    with zipfile.ZipFile(src) as z:
        root = z.namelist()[0].split("/")[0]
        for info in z.infolist():
            data = z.read(info)
            entries.append((info.filename, 0, zlib.crc32(data), data, len(data)))
    size = 3000 * (1 << 20)   # 3000 MiB, under the 4 GiB default cap: the ratio check fires
    payload, crc = _deflated_zeros(size)
    entries.insert(0, (f"{root}/data/weights/weight_99", 8, crc, payload, size))
    path = tmp_path_factory.mktemp("bomb") / "bomb.pt2"
    _write_zip(path, entries)
    return path, size


def test_zip_bomb_refused_by_ratio(bomb):
    path, size = bomb
    assert path.stat().st_size < 8 * (1 << 20)
    with zipfile.ZipFile(path) as z:        # a well-formed zip, really 3000 MiB inside
        info = z.getinfo(z.namelist()[0])
        assert info.file_size == size and info.compress_type == zipfile.ZIP_DEFLATED
        with z.open(info) as fh:
            assert fh.read(1 << 16) == bytes(1 << 16)
    # an explicit 4 GiB cap: the default is half the memory available, which on a busy machine
    # is below 3000 MiB, and then the entry cap would fire before the ratio check
    msg = refused(path, "data/weights/weight_99 expands", max_bytes=4 << 30)
    assert "compression ratio above 200:1" in msg


def test_zip_bomb_refused_by_entry_cap(bomb):
    path, size = bomb
    refused(path, f"would expand to {size} bytes (more than the {1 << 30}-byte cap)",
             max_bytes=1 << 30)


def test_total_cap(legit):
    path = legit["resblock_train"][0]
    with zipfile.ZipFile(path) as z:
        sizes = [i.file_size for i in z.infolist()]
    cap = max(sizes) + 1
    assert sum(sizes) > cap
    refused(path, f"expands to more than the {cap}-byte cap", max_bytes=cap)


def test_default_cap_is_bounded():
    cap = default_max_bytes()
    assert 0 < cap <= 4 << 30

