"""famfs_py.numpy: .npy files saved on the master, loaded as device memory on a client
(issue 26). The client keeps its page cache (`-c always`) so that `fincore` would count a copy
through the mount."""

from __future__ import annotations

import errno
import json
import os
import warnings

import numpy
import pytest
from helpers import MiB, as_user, device_ranges, resident, wait_until

from famfs_py import numpy as famfs_numpy
from famfs_py.lease import CopyWarning, WrongFormat


@pytest.fixture
def hosts(pair, mounts, tmp_path):
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "m1")
    cmp_ = mounts.mount(client, tmp_path / "m2", "-c", "always", "--rw")
    return master, client, mmp, cmp_


def in_device(array, memory) -> bool:
    address = array.__array_interface__["data"][0]
    return any(lo <= address and address + array.nbytes <= hi for lo, hi in device_ranges(memory))


def test_the_client_loads_the_masters_array_as_device_memory(hosts):
    master, client, mmp, cmp_ = hosts
    array = numpy.arange(8 * MiB, dtype=numpy.float64).reshape(1024, -1)  # 64 MiB
    famfs_numpy.save(mmp / "a.npy", array)
    wait_until((cmp_ / "a.npy").exists, timeout=30, what="the client seeing a.npy")
    loaded = famfs_numpy.load(cmp_ / "a.npy")
    assert loaded.shape == array.shape and loaded.dtype == array.dtype
    assert numpy.array_equal(loaded, array)
    assert not loaded.flags.writeable
    assert in_device(loaded, client.memory())
    assert resident(cmp_ / "a.npy") == 0
    assert numpy.array_equal(numpy.load(cmp_ / "a.npy"), array)  # plain numpy, the mount


def test_a_flushed_store_on_the_master_shows_in_the_clients_loaded_array(hosts):
    master, client, mmp, cmp_ = hosts
    famfs_numpy.save(mmp / "a.npy", numpy.zeros(1 << 16, dtype=numpy.int32))
    wait_until((cmp_ / "a.npy").exists, timeout=30, what="the client seeing a.npy")
    theirs = famfs_numpy.load(cmp_ / "a.npy")  # loaded before the store
    ours = famfs_numpy.load(mmp / "a.npy", "r+")
    ours[12345] = 77
    famfs_numpy.flush(ours)
    famfs_numpy.invalidate(theirs)
    assert int(theirs[12345]) == 77
    # and back: a --rw client's store, flushed, in the master's array
    writable = famfs_numpy.load(cmp_ / "a.npy", "r+")
    writable[1:3] = (5, 6)
    famfs_numpy.flush(writable[1:3])
    famfs_numpy.invalidate(ours)
    assert ours[:4].tolist() == [0, 5, 6, 0]


def test_layouts_round_trip(fresh, mounts):
    mp = mounts.mount(fresh)
    cases = {
        "fortran": numpy.asfortranarray(numpy.arange(24, dtype=numpy.int16).reshape(4, 6)),
        "empty": numpy.zeros((0, 3), dtype=numpy.float32),
        "scalar": numpy.array(3.5),
        "records": numpy.array([(1, 2.0), (3, 4.0)], dtype=[("a", "<i4"), ("b", ">f8")]),
    }
    for name, array in cases.items():
        famfs_numpy.save(mp / f"{name}.npy", array)
        loaded = famfs_numpy.load(mp / f"{name}.npy")
        assert loaded.dtype == array.dtype and loaded.shape == array.shape, name
        assert numpy.array_equal(loaded, array), name
        assert numpy.array_equal(numpy.load(mp / f"{name}.npy"), array), name
    assert famfs_numpy.load(mp / "fortran.npy").flags.f_contiguous


def test_a_client_without_rw_cannot_load_for_writing(pair, mounts, tmp_path):
    master, client = pair
    mmp = mounts.mount(master, tmp_path / "m1")
    cmp_ = mounts.mount(client, tmp_path / "m2")
    famfs_numpy.save(mmp / "a.npy", numpy.ones(4))
    wait_until((cmp_ / "a.npy").exists, timeout=30, what="the client seeing a.npy")
    with pytest.raises(OSError) as info:
        famfs_numpy.load(cmp_ / "a.npy", "r+")
    assert info.value.errno == errno.EROFS


def test_a_reader_without_device_access_gets_the_same_array_and_one_warning(public_mount):
    host, mp = public_mount
    array = numpy.arange(1000, dtype=numpy.uint16)
    famfs_numpy.save(mp / "a.npy", array)

    def load() -> str:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = famfs_numpy.load(mp / "a.npy")
        said = [str(w.message) for w in caught if issubclass(w.category, CopyWarning)]
        assert len(said) == 1 and "\n" not in said[0], said
        return f"{numpy.array_equal(got, array)}"

    assert as_user(65534, load) == "ok True"


def test_wrong_formats_are_named(fresh, mounts, tmp_path):
    mp = mounts.mount(fresh)
    local = tmp_path / "objects.npy"
    numpy.save(local, numpy.array([{"a": 1}, None], dtype=object))
    fresh.ok("cp", local, mp / "objects.npy")
    fresh.ok("creat", "-s", "4k", mp / "zeros")
    with pytest.raises(WrongFormat, match=r"objects\.npy holds Python objects"):
        famfs_numpy.load(mp / "objects.npy")
    with pytest.raises(WrongFormat, match=r"zeros is not a numpy \.npy file"):
        famfs_numpy.load(mp / "zeros")
    with pytest.raises(ValueError, match="Python objects"):
        famfs_numpy.save(mp / "o2.npy", numpy.array([None], dtype=object))
    assert not (mp / "o2.npy").exists()  # refused before anything was created
    with pytest.raises(ValueError, match="mmap_mode"):
        famfs_numpy.load(mp / "zeros", "w+")


def test_a_poisoned_array_raises_eio(fresh, mounts):
    mp = mounts.mount(fresh)
    famfs_numpy.save(mp / "a.npy", numpy.ones(10))
    getmap = json.loads(fresh.ok("getmap", "--json", mp / "a.npy").stdout)
    offset = int(getmap[0]["extents"][0]["offset"])
    fresh.ok("dax", "inject-error", "dax0.0", "--offset", str(offset), "--length", "4096")
    with pytest.raises(OSError) as info:
        famfs_numpy.load(mp / "a.npy")
    assert info.value.errno == errno.EIO


def test_arrays_keep_the_mapping_and_release_it_with_the_last_view(fresh, mounts):
    mp = mounts.mount(fresh)
    famfs_numpy.save(mp / "a.npy", numpy.arange(100))
    memory = fresh.memory()
    view = famfs_numpy.load(mp / "a.npy")[10:20]
    assert device_ranges(memory) and int(view[0]) == 10
    del view
    assert not device_ranges(memory)
    assert os.path.getsize(mp / "a.npy") > 800
