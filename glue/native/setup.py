"""The extension module of glue/native/pyproject.toml (setuptools declares extensions here).

``py_limited_api`` names the file ``shipping_ndjson.abi3.so`` and the bdist_wheel option tags the
wheel ``cp39-abi3``; the C file itself defines ``Py_LIMITED_API`` 0x03090000. No ``-march``: the
module runs on whatever x86_64 Glue gives the job. ``-g0`` and no run path: the binary holds no
path of the build machine (a Python built with ``-Wl,-rpath`` in its LDSHARED, such as pyenv's,
would put its own lib folder there), so the same sources give the same bytes wherever they are
built (deploy/native_wheel.py relies on that).
"""
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class build_ext_without_run_path(build_ext):
    """build_ext that drops the interpreter's run path: the module needs no library of its own."""

    def build_extensions(self):
        linker = getattr(self.compiler, "linker_so", None)
        if linker:
            self.compiler.linker_so = [arg for arg in linker if not arg.startswith(("-Wl,-rpath", "-Wl,-R"))]
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "shipping_ndjson",
            sources=["shipping_ndjson.c"],
            py_limited_api=True,
            extra_compile_args=["-O2", "-g0"],
        )
    ],
    cmdclass={"build_ext": build_ext_without_run_path},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
