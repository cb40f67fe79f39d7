"""Build configuration beyond pyproject.toml: the C extensions, famfs_py.dax._region (device
memory mappings) and famfs_py.dax._fcc (CPU cache flush and invalidate)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "famfs_py.dax._region",
            ["famfs_py/dax/_region.c"],
            extra_compile_args=["-O2", "-Wall", "-Werror=implicit-function-declaration"],
        ),
        Extension(
            "famfs_py.dax._fcc",
            ["famfs_py/dax/_fcc.c"],
            extra_compile_args=["-O2", "-Wall", "-Werror=implicit-function-declaration"],
        ),
    ]
)
