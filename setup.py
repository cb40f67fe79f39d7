"""Build configuration beyond pyproject.toml: the C extensions, famfs_py.dax._region (device
memory mappings), famfs_py.dax._fcc (CPU cache flush and invalidate) and famfs_py.omf._replay
(log entries decoded in bulk for replay)."""

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
        Extension(
            "famfs_py.omf._replay",
            ["famfs_py/omf/_replay.c"],
            libraries=["z"],
            extra_compile_args=["-O2", "-Wall", "-Werror=implicit-function-declaration"],
        ),
    ]
)
