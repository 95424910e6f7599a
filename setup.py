"""Build the Cython kernels.

Optimised (-O3) and portable by default, so wheels run on any CPU of their architecture.
Set BPTT_NATIVE=1 when building from source to add -march=native for this machine only,
and BPTT_SANITIZE=address for an AddressSanitizer build used by dev/asan-tests.sh.
The kernels' thread team is OpenMP: the extensions in OPENMP get -fopenmp when the
compiler builds and links a small OpenMP program with it (BPTT_OPENMP=0 skips that);
without it they build single-threaded (src/bptt/_team.h).
"""
import os
import sys
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

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

# the thread team's runtime as Python sees it (bptt.threads, the tests)
team = Extension(
    "bptt._team",
    ["src/bptt/_team.pyx"],
    depends=["src/bptt/_team.h"],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

# the products of _packed.h callable from Python, for the tests and bench/products.py
products = Extension(
    "bptt._products",
    ["src/bptt/_products.pyx"],
    depends=["src/bptt/_blas.pxd", "src/bptt/_packed.h"],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

OPENMP = {"bptt._kernels", "bptt._team"}
OPENMP_PROBE = """#include <omp.h>
int main(void) {
    int n = 0;
#pragma omp parallel reduction(+ : n)
    n += omp_get_num_threads() > 0;
    return n > 0 ? 0 : 1;
}
"""


def openmp_flags(compiler) -> list[str]:
    """["-fopenmp"] when this compiler compiles and links OPENMP_PROBE with it, else []."""
    if os.environ.get("BPTT_OPENMP") == "0":
        return []
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write(OPENMP_PROBE)
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(objects, "probe", output_dir=tmp,
                                     extra_postargs=["-fopenmp"])
        except Exception:          # CompileError, LinkError: no OpenMP here
            return []
    return ["-fopenmp"]


class BuildExt(build_ext):
    """build_ext that adds openmp_flags() to the extensions named in OPENMP."""

    def build_extensions(self):
        flags = openmp_flags(self.compiler)
        print(f"bptt: OpenMP {'on (-fopenmp)' if flags else 'off: single-threaded team'}",
              file=sys.stderr)
        for ext in self.extensions:
            if ext.name in OPENMP:
                ext.extra_compile_args = ext.extra_compile_args + flags
                ext.extra_link_args = ext.extra_link_args + flags
        super().build_extensions()


setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=cythonize(
        [kernels, online, team, products],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
