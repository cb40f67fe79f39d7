"""mkfs.famfs-py: the mkfs utility front-end (the logic lives in famfs_py.fs.mkfs)."""
