"""Load a torch.export ``.pt2`` archive without letting it run code.

``torch.export.load`` is a pickle loader in disguise (its own docstring says so): a crafted archive
runs arbitrary code through ``torch.load(weights_only=False)`` (weights or constants marked
``use_pickle``, example inputs that fail the safe load, the legacy pre-2.7 zip format),
``pickle.loads`` / ``torch._C._pickle_load_obj`` (opaque / TorchScript constants), AOTInductor
shared libraries, ``sympy.sympify`` (an ``eval``) on every symbolic-shape string, FX code generation
that pastes graph names verbatim into Python source, and ``guards_code`` strings that
``ExportedProgram.module()`` ``exec``\\s.

:func:`load_program_safely` first inspects the archive as plain data (``zipfile`` + ``json``, and
torch's own zip reader only to list records and read the small metadata entries, so that the bytes
checked are the bytes torch will use), refuses anything outside what ``torch.export.save`` writes
for a plain program, and only then lets torch deserialize it -- inside :func:`torch_load_guard`,
which makes every pickle path raise, validates ``sympy.sympify`` strings and FX-generated names
again, and captures torch's logging / warnings / stderr so the caller sees one line.

Every refusal is an :class:`UnsafeArchiveError` (a ``ValueError``) whose message is one line::

    model.pt2: refused: data/weights/model_weights_config.json marks 'fc.weight' use_pickle (...)

The modules, by responsibility: ``archive`` (zip structure, entry names, sizes, torch's reader),
``configs`` (weights / constants configs, example inputs), ``program`` (the program JSON),
``expressions`` (sympy and guard grammars), ``targets`` (operator allow-lists), ``treespec``,
``names``, ``limits``, ``guard`` (the runtime guard) with ``capture`` (torch's output),
``inspection`` and ``load`` (the entry points).  docs/security.md gives the threat model and the
reason for every check.  Only the standard library and torch are used.
"""
from archscan.model.pt2.errors import Pt2ArchiveError, Pt2LoadError, UnsafeArchiveError
from archscan.model.pt2.guard import torch_load_guard
from archscan.model.pt2.inspection import ArchiveReport, inspect_archive
from archscan.model.pt2.limits import default_max_bytes
from archscan.model.pt2.load import load_program_safely
from archscan.model.pt2.targets import DEFAULT_OP_NAMESPACES

__all__ = [
    "Pt2ArchiveError",
    "UnsafeArchiveError",
    "Pt2LoadError",
    "ArchiveReport",
    "load_program_safely",
    "inspect_archive",
    "torch_load_guard",
    "default_max_bytes",
    "DEFAULT_OP_NAMESPACES",
]
