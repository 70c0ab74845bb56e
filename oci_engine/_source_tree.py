"""Map kernels/ and sandbox/ to oci_engine.kernels / oci_engine.sandbox inside a source tree.

setup.py installs them under oci_engine (package_dir). When Python finds oci_engine/ straight from
a checkout (the repository root on sys.path, as with pytest or `python -c` there), nothing else
knows that mapping, so this finder supplies it for exactly those two subpackages.
"""
import importlib.machinery
import importlib.util
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SUBPACKAGES = {"oci_engine.kernels": "kernels", "oci_engine.sandbox": "sandbox"}


class _SourceTreeFinder:
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        folder = _SUBPACKAGES.get(fullname)
        if folder is None:
            return None
        init = os.path.join(_ROOT, folder, "__init__.py")
        if not os.path.exists(init):
            return None
        return importlib.util.spec_from_file_location(
            fullname, init, submodule_search_locations=[os.path.join(_ROOT, folder)]
        )


def install():
    here = os.path.dirname(os.path.abspath(__file__))
    installed = any(os.path.isdir(os.path.join(here, f)) for f in ("kernels", "sandbox"))
    if installed or not os.path.exists(os.path.join(_ROOT, "setup.py")):
        return
    if not any(f is _SourceTreeFinder for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceTreeFinder)
