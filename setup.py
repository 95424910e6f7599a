"""Build the Cython kernels.

Optimised (-O3) and portable by default, so wheels run on any CPU of their architecture.
Set BPTT_NATIVE=1 when building from source to add -march=native for this machine only,
and BPTT_SANITIZE=address for an AddressSanitizer build used by dev/asan-tests.sh.
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

compile_args = ["-O3", "-fno-math-errno"]
link_args = []
if os.environ.get("BPTT_NATIVE") == "1":
    compile_args.append("-march=native")
if os.environ.get("BPTT_SANITIZE") == "address":
    compile_args = ["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"]
    link_args = ["-fsanitize=address"]

kernels = Extension(
    "bptt._kernels",
    ["src/bptt/_kernels.pyx"],
    depends=["src/bptt/_kernels.pxd", "src/bptt/_blas.pxd", "src/bptt/_packed.h",
             "src/bptt/_vecmath.h", "src/bptt/_vecmath_impl.h"],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

# online (batch 1) training: -fopenmp-simd lets the dot products vectorize (no runtime)
online = Extension(
    "bptt._online",
    ["src/bptt/_online.pyx"],
    depends=["src/bptt/_online.h", "src/bptt/_online_impl.h", "src/bptt/_vecmath.h",
             "src/bptt/_vecmath_impl.h"],
    extra_compile_args=compile_args + ["-fopenmp-simd"],
    extra_link_args=link_args,
)

setup(
    ext_modules=cythonize(
        [kernels, online],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
