"""The files famfs-py installs for systemd, udev and mount(8), shipped inside the package:
the unit template `famfs-py@.service`, the udev rule `90-famfs-py-dax.rules` and
`example.conf`. Their one source is the checkout's `systemd/`: here they are relative symlinks
to it, which a build turns into copies. `famfs-py install-service` puts them in place
(famfs_py.cli.install_service_cmd).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

UNIT_TEMPLATE = "famfs-py@.service"
UDEV_RULE = "90-famfs-py-dax.rules"
EXAMPLE_CONF = "example.conf"
# the unit names the program by this path; the installer writes the real one
UNIT_PLACEHOLDER_BIN = "/usr/local/bin"


def path(name: str) -> Path:
    """Where one of the packaged files is (a real file: the package is installed unzipped)."""
    return Path(str(files(__name__) / name))
