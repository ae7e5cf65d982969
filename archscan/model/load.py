"""Turn a MODEL spec (file.py:NAME, package.module:NAME, or a .pt2 file) into an nn.Module."""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
import traceback
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from archscan.errors import InputError
from archscan.model.pt2 import Pt2ArchiveError, load_program_safely

_CREATED: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()


@contextmanager
def record_creation_sites():
    """While active, remember for every nn.Module built the user's file:line that built it.

    Layers in an nn.Sequential are *called* from inside torch, so the call site says nothing; the
    line that constructed the layer is the one a user edits.
    """
    original = nn.Module.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        for frame in reversed(traceback.extract_stack()[:-1]):
            if "site-packages" not in frame.filename and "/archscan/" not in frame.filename \
                    and "<frozen" not in frame.filename:
                _CREATED[self] = f"{frame.filename}:{frame.lineno}"
                break

    nn.Module.__init__ = init
    try:
        yield
    finally:
        nn.Module.__init__ = original


def creation_site(module: nn.Module) -> str | None:
    return _CREATED.get(module)


@dataclass
class LoadedModel:
    module: nn.Module | None          # None for a .pt2 program
    program: object | None            # torch.export.ExportedProgram for .pt2
    spec: str
    source_file: str | None


def parse_model_args(items) -> dict:
    """['width=16', 'act=tanh'] -> {'width': 16, 'act': 'tanh'} (ints, floats, bools, strings)."""
    out = {}
    for item in items or ():
        if "=" not in item:
            raise InputError(f"--model-arg {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = _literal(value.strip())
    return out


def _literal(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(value.lower(), value)


def user_frame(exc: BaseException, prefer: str | None = None) -> str:
    """file:line of the deepest traceback frame outside torch and archscan (the user's code)."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if "site-packages" not in f.filename and "/archscan/" not in f.filename
            and "<frozen" not in f.filename]
    if prefer:
        mine = [f for f in mine if f.filename == prefer] or mine
    if not mine:
        return ""
    return f"{mine[-1].filename}:{mine[-1].lineno}"


def load_model(spec: str, model_args: dict | None = None, num_classes: int | None = None,
               seed: int = 0) -> LoadedModel:
    """Import the spec's module and build the model.  Everything random the user's code draws while
    importing and constructing (a factory's initial weights) comes from torch's generator seeded
    with ``seed``, inside ``fork_rng``: the same seed builds the same weights, whatever ran before,
    and the caller's random state is left as it was."""
    if spec.endswith(".pt2"):
        return _load_program(spec)
    if ":" not in spec:
        raise InputError(f"model {spec!r}: expected path/to/file.py:NAME, package.module:NAME or a .pt2 file")
    where, name = spec.rsplit(":", 1)
    with seeded(seed), record_creation_sites():
        module, source = _import(where)
        if not hasattr(module, name):
            avail = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))[:12]
            raise InputError(f"{where}: no attribute {name!r} (defined there: {', '.join(avail)})")
        obj = getattr(module, name)
        _check_defined_there(obj, module, spec)
        model = _instantiate(obj, spec, model_args or {}, num_classes, source)
    return LoadedModel(model, None, spec, source)


@contextmanager
def seeded(seed: int):
    """torch's (and numpy's and random's) global generators seeded with ``seed``, restored after."""
    import random

    import numpy as np
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _import(where: str):
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if not path.is_file():
            raise InputError(f"{where}: no such file")
        _on_path(str(path.resolve().parent))     # its sibling modules import, as when run as a script
        mod_name = f"archscan_user_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the user's file failed to import
            raise InputError(f"{where}: import failed: {type(e).__name__}: {e} ({user_frame(e)})") from e
        return module, str(path.resolve())
    _on_path(os.getcwd())   # package.module:NAME from the working directory, as `python -m archscan` does
    try:
        module = importlib.import_module(where)
    except Exception as e:
        raise InputError(f"{where}: cannot import module: {type(e).__name__}: {e}") from e
    return module, getattr(module, "__file__", None)


def _on_path(folder: str) -> None:
    """Put ``folder`` first on sys.path (once): the same resolution for ``archscan`` and
    ``python -m archscan``, whatever the entry point put there."""
    if folder not in sys.path and not (folder == os.getcwd() and "" in sys.path):
        sys.path.insert(0, folder)


# Packages whose functions are never model factories (a spec like torch:load or numpy:load)
NOT_MODEL_PACKAGES = frozenset({"torch", "numpy", "scipy", "pickle", "archscan", "archscan_kernels"})


def _check_defined_there(obj, module, spec: str) -> None:
    """A spec names an nn.Module (instance or subclass) or a factory the named module defines (or a
    submodule of it re-exports): never an arbitrary callable such as ``os:system``."""
    if isinstance(obj, nn.Module) or (isinstance(obj, type) and issubclass(obj, nn.Module)):
        return
    if getattr(module, "__archscan_live__", False):   # the pytest plugin's models, passed in Python
        return
    home = getattr(obj, "__module__", None) or ""
    top = module.__name__.split(".")[0]
    ours = home == module.__name__ or home.startswith(module.__name__ + ".")
    if inspect.isfunction(obj) and ours and top not in NOT_MODEL_PACKAGES and top not in sys.stdlib_module_names:
        return
    raise InputError(f"{spec}: not an nn.Module, an nn.Module subclass or a factory function defined in "
                     f"{module.__name__} (it is {type(obj).__name__} from {home or 'nowhere'})")


def _instantiate(obj, spec, model_args, num_classes, source) -> nn.Module:
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise InputError(f"{spec}: {type(obj).__name__} is neither an nn.Module nor a factory")
    kwargs = dict(model_args)
    if num_classes is not None and _accepts(obj, "num_classes"):
        kwargs.setdefault("num_classes", num_classes)
    try:
        model = obj(**kwargs)
    except Exception as e:
        raise InputError(f"{spec}: constructing the model raised {type(e).__name__}: {e} "
                         f"({user_frame(e, source)})") from e
    if not isinstance(model, nn.Module):
        raise InputError(f"{spec}: returned {type(model).__name__}, not an nn.Module")
    return model


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _load_program(spec: str) -> LoadedModel:
    """Load a .pt2 without letting it run code (torch.export.load would unpickle it).

    Every refusal, and every failure of torch on an archive that passed the checks, is one line
    naming the file and the entry (``Pt2ArchiveError``); anything else the loader raises is
    still bad input, never a traceback.
    """
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"{spec}: no such file")
    cap = _pt2_size_cap()
    try:
        program = load_program_safely(spec, max_bytes=cap)
    except Pt2ArchiveError as e:
        raise InputError(str(e)) from e
    except Exception as e:  # a check tripping over input it did not foresee
        raise InputError(f"{spec}: not a readable torch.export program "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e
    return LoadedModel(None, program, spec, str(path.resolve()))


def _pt2_size_cap() -> int | None:
    """ARCHSCAN_MAX_PT2_BYTES, the cap on a .pt2's uncompressed size (None: the loader's default,
    the smaller of 4 GiB and half the memory available)."""
    text = os.environ.get("ARCHSCAN_MAX_PT2_BYTES", "").strip()
    if not text:
        return None
    try:
        cap = int(text)
    except ValueError:
        cap = 0
    if cap < 1:
        raise InputError(f"ARCHSCAN_MAX_PT2_BYTES={text!r}: expected a positive number of bytes")
    return cap


def _load_failure(e: Exception) -> str:
    """torch's refusal in one line -- without its advice to load with weights_only=False."""
    text = " ".join(str(e).split())
    found = re.search(r"unsupported GLOBAL ([\w.]+)", text)
    if found:
        return (f"refused: unpickling it would call {found.group(1)} (code, not tensors); "
                f"archscan loads plain tensors only (weights_only=True)")
    if "Weights only load failed" in text:
        return "refused: it holds objects other than plain tensors (archscan loads with weights_only=True)"
    return f"not a loadable state_dict ({type(e).__name__}: {text[:200]})"


def load_weights(model: nn.Module, path: str) -> None:
    """Load a state_dict safely (weights_only=True); a mismatch is a one-line InputError."""
    if not Path(path).is_file():
        raise InputError(f"--weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"--weights {path}: {_load_failure(e)}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"--weights {path}: expected a state_dict, found {type(state).__name__}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise InputError(f"--weights {path}: does not match the model: {' '.join(first[:3])[:300]}") from e


def check_finite(loaded: LoadedModel, spec: str) -> None:
    """NaN or infinite weights make every figure meaningless: refuse them, naming the tensor."""
    if loaded.module is not None:
        groups = (("parameter", loaded.module.named_parameters()), ("buffer", loaded.module.named_buffers()))
    else:
        groups = (("weight", loaded.program.state_dict.items()), ("constant", loaded.program.constants.items()))
    for kind, named in groups:
        for name, t in named:
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise InputError(f"{spec}: {kind} {name} holds {bad} NaN or infinite value{'s' if bad > 1 else ''}; "
                                 f"archscan needs finite weights")
