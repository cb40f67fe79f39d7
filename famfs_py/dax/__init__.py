"""Dax devices (real and emulated), their memory, and the holder claim (fs_dax_get)."""
