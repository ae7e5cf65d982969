"""Errors users see as one line (exit code 2); each keeps its cause for --debug."""


class ArchscanError(Exception):
    """Base class: a problem with what the user gave, reported without a traceback."""


class InputError(ArchscanError):
    """Bad command-line input, model spec, checkpoint or image folder."""


class TraceError(ArchscanError):
    """The model could not be traced by torch.fx nor torch.export."""


class UnsupportedLayerError(ArchscanError):
    """Raised only in strict mode (--strict, strict = true, or ARCHSCAN_STRICT=1): an op no rule handles."""
