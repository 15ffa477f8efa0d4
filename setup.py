"""Build the rebind LD_PRELOAD library into the package (``wsproxy/rebind.so``), and the optional
C speed-ups (``wsproxy._speedups``: masking and base64 for the relay's hot path).

Everything else about the package is declared in pyproject.toml. rebind.so is not a Python
extension module: it is declared as one only so that setuptools compiles it with the platform's
compiler, builds it in place for editable installs and tags the wheel for the platform. The custom
command gives it the plain name wsproxy looks for.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildRebind(build_ext):
    """Compile rebind/rebind.c to ``wsproxy/rebind.so`` (no Python ABI suffix, no Python API)."""

    def get_ext_filename(self, fullname: str) -> str:
        if fullname.rpartition(".")[2] != "rebind":  # setuptools asks with and without the package
            return str(super().get_ext_filename(fullname))
        return os.path.join(*fullname.split(".")) + ".so"

    def get_export_symbols(self, ext: Extension) -> list[str]:
        if ext is not rebind:
            return list(super().get_export_symbols(ext))
        return []  # not a Python module: no PyInit_ function to export


rebind = Extension(
    "wsproxy.rebind",
    sources=["rebind/rebind.c"],
    extra_compile_args=["-Wall", "-Wextra", "-Werror", "-O2", "-fPIC"],
    libraries=["dl"],
    extra_link_args=["-pthread"],
)

# Without a compiler the speed-ups are skipped (optional) and wsproxy uses its pure-Python code.
speedups = Extension("wsproxy._speedups", sources=["wsproxy/_speedups.c"], optional=True)

setup(ext_modules=[rebind, speedups], cmdclass={"build_ext": BuildRebind})
