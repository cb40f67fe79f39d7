"""The famfs filesystem model: log replay and append, allocation, namespace, mkfs, fsck."""
