"""Loaded at start-up by every famfs-py process the tests run (tests put this directory on
PYTHONPATH): installs the test-only switches of famfs_switches when their variables are set,
then runs the interpreter's own sitecustomize, if it has one."""

import famfs_switches

famfs_switches.install_from_environment()
famfs_switches.chain_sitecustomize(__file__)
