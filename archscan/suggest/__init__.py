"""``archscan suggest``: try small changes of the model and of the client's setting, rescan each, and
report the smallest one that passes the gate (or improves the verdict), with its measured effect."""
from archscan.suggest.search import Outcome, Suggestions, needed, suggest

__all__ = ["Outcome", "Suggestions", "needed", "suggest"]
