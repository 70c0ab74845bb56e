"""Which template a one-shot cell forks from: the lean one when its code cannot need more.

The host reads the code before it takes a spare. A cell gets a lean spare (forked before pandas
and matplotlib were imported, see zygote_spares) only when nothing in its text points past the
lean modules: no name of a module only the full template holds, no import of anything outside
the standard library and the lean set (a third-party package may import pandas itself), and no
dynamic import or code execution. Everything else gets a full spare. A cell that reaches a
heavy module anyway (a name assembled at run time) still gets it: the import simply costs what
it costs in a fresh interpreter. Both kinds are forks with the same isolation; only the
modules already in memory differ.
"""
import re
import sys

# `import a.b as c, d` and `from a.b import c` at the start of a statement (after `;` too).
_IMPORT = re.compile(r"(?:^|;)[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import\b|import[ \t]+([^;#\n]+))",
                     re.MULTILINE)
_DYNAMIC = re.compile(r"\b(?:__import__|importlib|exec|eval|builtins|__builtins__|runpy|"
                      r"pkgutil|pickle|marshal|shelve|sys\.modules)\b")
_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))


class Chooser:
    """heavy: modules only the full template holds; lean: those the lean one holds too."""

    def __init__(self, lean, heavy):
        self.lean = frozenset(lean)
        self.heavy = frozenset(heavy)
        names = set(self.heavy)
        if "matplotlib" in names:
            names.add("pylab")  # matplotlib's other entry point
        self._heavy_word = re.compile(r"\b(?:%s)\b" % "|".join(sorted(map(re.escape, names)))) \
            if names else None

    def kind(self, code):
        """'lean' or 'full' for this cell's code."""
        if not _STDLIB or (self._heavy_word is not None and self._heavy_word.search(code)):
            return "full"
        if _DYNAMIC.search(code):
            return "full"
        for m in _IMPORT.finditer(code):
            modules = [m.group(1)] if m.group(1) else [
                part.split()[0] for part in m.group(2).replace("(", " ").replace(")", " ").split(",")
                if part.split()]
            for mod in modules:
                top = mod.split(".")[0]
                if not top or (top not in _STDLIB and top not in self.lean):
                    return "full"
        return "lean"
