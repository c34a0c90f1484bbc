"""Build the sensiformer C engine.

Metadata lives in pyproject.toml; this file only declares the extension and
decides compiler flags when the compiler is known.

Environment switches (all optional):

SENSIFORMER_OPENMP=auto|0|1   probe for OpenMP (default), force it off, or require it
SENSIFORMER_NATIVE=1          add -march=native (local builds only: the result is not portable)
SENSIFORMER_CPU_PATHS="..."   which CPU paths to compile (default: every one the compiler supports)
SENSIFORMER_SANITIZE=1        build with -fsanitize=address,undefined -O1 -g (for CI's sanitizer stage)
SENSIFORMER_CFLAGS="..."      extra compiler flags appended last
"""

import os
import shlex
import tempfile
import warnings
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Numeric sources are compiled twice, once per precision (SF_DOUBLE=0/1), so one
# source serves float32 and float64; every symbol they define carries a _f32/_f64 suffix.
NUMERIC_SOURCES = sorted(glob("csrc/numeric/*.c"))
COMMON_SOURCES = sorted(glob("csrc/*.c"))
HEADERS = sorted(glob("csrc/*.h") + glob("csrc/numeric/*.h"))

# CPU paths beyond the baseline: (name, SF_CPU_PATH value). Each is a complete build of csrc/numeric whose
# vector kernels carry that path's target attribute (kernels.h, gemm.c); built when the compiler has the
# attributes and intrinsics (gcc >= 12 on x86-64).
CPU_PATHS = [("x86-64-v3", "1"), ("x86-64-v4", "2")]
CPU_PATH_PROBE = r"""
#include <immintrin.h>
__attribute__((target("arch=x86-64-v4"))) void f(float *p) { _mm512_storeu_ps(p, _mm512_fmadd_ps(_mm512_loadu_ps(p), _mm512_set1_ps(2), _mm512_set1_ps(1))); }
__attribute__((target("arch=x86-64-v3"))) void g(float *p) { _mm256_storeu_ps(p, _mm256_fmadd_ps(_mm256_loadu_ps(p), _mm256_set1_ps(2), _mm256_set1_ps(1))); }
int main(void) { __builtin_cpu_init(); return __builtin_cpu_supports("avx2") < 0 ? (f(0), g(0), 1) : 0; }
"""

OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


def _env(name, default=""):
    return os.environ.get(name, default).strip()


class BuildEngine(build_ext):
    def _compiles_with(self, source, flags):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "probe.c")
            with open(path, "w") as fh:
                fh.write(source)
            try:
                objs = self.compiler.compile([path], output_dir=tmp, extra_postargs=flags)
                self.compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=flags)
            except Exception:  # CompileError, LinkError, or a missing tool
                return False
        return True

    def _openmp_flags(self):
        mode = _env("SENSIFORMER_OPENMP", "auto").lower()
        if mode in ("0", "off", "false", "no"):
            return None
        candidates = [["-fopenmp"], ["-Xpreprocessor", "-fopenmp", "-lomp"]]
        for flags in candidates:
            if self._compiles_with(OPENMP_PROBE, flags):
                return flags
        if mode in ("1", "on", "true", "yes"):
            raise RuntimeError("SENSIFORMER_OPENMP=1 but the compiler cannot build an OpenMP program")
        warnings.warn("OpenMP not available: building sensiformer single-threaded "
                      "(sensiformer.show_config() reports openmp=False)")
        return None

    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            raise RuntimeError("sensiformer's engine needs gcc or clang (C11 with GNU extensions)")
        # No errno and no FP-exception flags (never read): lets loops with libm calls and
        # compare-selects (clamps, ReLU) vectorise; the arithmetic itself is unchanged.
        compile_flags = ["-std=gnu11", "-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast",
                         "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter",
                         "-Wno-unknown-pragmas"]
        link_flags = []
        omp = self._openmp_flags()
        if omp:
            compile_flags += [f for f in omp if f != "-lomp"]
            link_flags += omp
        else:
            compile_flags.append("-fopenmp-simd")
        if _env("SENSIFORMER_NATIVE") == "1":
            compile_flags.append("-march=native")
        if _env("SENSIFORMER_SANITIZE") == "1":
            san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1",
                   "-fno-sanitize-recover=undefined"]
            compile_flags += san
            link_flags += ["-fsanitize=address,undefined"]
        compile_flags += shlex.split(_env("SENSIFORMER_CFLAGS"))
        import numpy

        described = " ".join(compile_flags).replace('"', "'")
        for ext in self.extensions:
            ext.include_dirs += [numpy.get_include(), "csrc"]
            ext.extra_compile_args = compile_flags
            ext.extra_link_args = link_flags + ["-lm"]
            ext.define_macros += [
                ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION"),
                ("SF_HAVE_OPENMP", "1" if omp else "0"),
                ("SF_BUILD_FLAGS", '"%s"' % described),
            ]
        super().build_extensions()

    def _cpu_paths(self):
        """The CPU paths to compile the numeric code for: (name, SF_CPU_PATH value). Every path is a
        complete build of csrc/numeric, chosen once per process at run time (SENSIFORMER_CPU_PATH)."""
        paths = [("baseline", "0")]
        if self._compiles_with(CPU_PATH_PROBE, []):
            paths += CPU_PATHS
        wanted = _env("SENSIFORMER_CPU_PATHS")
        if wanted:
            names = wanted.replace(",", " ").split()
            unknown = set(names) - {p[0] for p in paths}
            if unknown:
                raise RuntimeError(f"SENSIFORMER_CPU_PATHS: {sorted(unknown)} cannot be built by this compiler")
            paths = [p for p in paths if p[0] in names or p[0] == "baseline"]
        return paths

    def build_extension(self, ext):
        # Compile the numeric sources once per (precision, CPU path) into separate object trees; the
        # macros SF_DOUBLE and SF_CPU_PATH give every symbol a suffix such as _f32_v3.
        objects, built = [], []
        for path, value in self._cpu_paths():
            built.append(value)
            for precision, is_double in (("f32", "0"), ("f64", "1")):
                objects += self.compiler.compile(
                    NUMERIC_SOURCES,
                    output_dir=os.path.join(self.build_temp, precision, path),
                    macros=ext.define_macros + [("SF_DOUBLE", is_double), ("SF_CPU_PATH", value)],
                    include_dirs=ext.include_dirs,
                    extra_postargs=ext.extra_compile_args,
                    depends=ext.depends,
                )
        ext.define_macros.append(("SF_BUILT_PATHS", "0x%x" % sum(1 << int(v) for v in built)))
        ext.extra_objects = objects
        super().build_extension(ext)


engine = Extension(
    "sensiformer._engine",
    sources=COMMON_SOURCES,
    depends=HEADERS + NUMERIC_SOURCES,
)

setup(ext_modules=[engine], cmdclass={"build_ext": BuildEngine})
