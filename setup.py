"""Build the Cython kernels.

Optimised (-O3) and portable by default, so wheels run on any CPU of their architecture.
Set BPTT_NATIVE=1 when building from source to add -march=native for this machine only.
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

compile_args = ["-O3"]
if os.environ.get("BPTT_NATIVE") == "1":
    compile_args.append("-march=native")

kernels = Extension(
    "bptt._kernels",
    ["src/bptt/_kernels.pyx"],
    extra_compile_args=compile_args,
)

setup(
    ext_modules=cythonize(
        [kernels],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
