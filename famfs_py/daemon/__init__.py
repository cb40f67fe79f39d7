"""The FUSE daemon: pyfuse3 on trio over the filesystem model (the only user of pyfuse3)."""
