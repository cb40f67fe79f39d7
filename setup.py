"""Build configuration beyond pyproject.toml: the one C extension (famfs_py.dax._region)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "famfs_py.dax._region",
            ["famfs_py/dax/_region.c"],
            extra_compile_args=["-O2", "-Wall", "-Werror=implicit-function-declaration"],
        )
    ]
)
