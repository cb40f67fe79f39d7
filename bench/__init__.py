"""famfs-py benchmarks: famfs-py against tmpfs, a minimal pyfuse3 server, in-process memcpy
and upstream's published figures (`python -m bench [--quick]`; see README.md)."""
