"""Two hosts, one memory: guest A (the master) and guest B (a --rw client) boot at once on the
same backing file, each with its own system UUID, and meet in /xfer (one directory both share)
only to say when the other may go on; the data goes through the device.

The client sees files the master creates while it is mounted, without any command (it follows
the log), reads them byte-exact, writes into one that the master reads back, and the two
exchange counters through open_mapped views with no system call in the loop, and `famfs-py pcq`
moves 100,000 messages from the master's producer to the client's consumer (upstream's queue;
none lost, duplicated or corrupt, the cache instructions in use). Files shared through the mount
(issue 23): the client holds a file open and mapped MAP_SHARED through its mount; the master's
write() and its msync'd MAP_SHARED store reach the client's descriptor, mapping and fresh opens
with no command, a 2 MiB-aligned 2 MiB msync'd range too, and a MAP_PRIVATE store never does.
The master writes an Arrow table (famfs_py.arrow.write_table) that the client reads zero-copy,
its buffers in the client's mapping of /dev/dax0.0 (issue 26). At the end the master leaves a
manifest (every file's sha256) for the host, which opens the memory as an emulated device and
checks the same tree and bytes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

from guest.inguest.checks import (
    BIN,
    DEVICE,
    XFER,
    Scenario,
    State,
    cli,
    is_mounted,
    pattern,
    sha256,
    wait_until,
)

MASTER = Scenario("two_hosts_master")
CLIENT = Scenario("two_hosts_client")
MiB = 1 << 20
ROUNDS = 50
PEER_WAIT = 600  # the peer boots, imports and mounts under TCG on a shared machine
BEFORE = {"early/seeded": ("5m", 21), "early/small": ("4k", 22)}
AFTER = {"late/seeded": ("3m", 31), "late/deeper/other": ("2m", 32)}
TREE = {"late/tree/a": 5000, "late/tree/b/c": MiB + 7}
# extracted by tar -x through the master's mount (issue 24): path -> (size, mode)
UNTAR = {"late/untar/x.txt": (5000, 0o640), "late/untar/sub/y.bin": (3 * MiB + 3, 0o600)}
UNTAR_DIR_MODE = 0o750  # late/untar/sub: set by tar after filling it
PCQ_MESSAGES = 100_000
PCQ_SEED = 42
SHARED_WRITE = b"written!"
SHARED_PAGE = pattern(51, 4096)
SHARED_RANGE = pattern(52, 2 * MiB)
TABLE_ROWS = 1 << 20  # 16 MiB of columns


def tell(name: str, data: object = None) -> None:
    """Say `name` to the other guest (an atomically written /xfer/NAME.json)."""
    tmp = XFER / f".{name}.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, XFER / f"{name}.json")


def hear(name: str, peer: str, timeout: float = PEER_WAIT) -> object:
    """Wait for the other guest to say `name`; fail early if it has ended."""
    path = XFER / f"{name}.json"

    def said() -> bool:
        if path.exists():
            return True
        if (XFER / f"{peer}.rc").exists():
            raise AssertionError(f"guest {peer} ended without saying {name}")
        return False

    wait_until(said, timeout, f"guest {peer} to say {name}", step=0.2)
    return json.loads(path.read_text())


def pcq_counts(stdout: str, role: str) -> dict[str, int]:
    """The numbers of pcq's summary line for `role` (nsent=, nreceived=, nerrors=, ...)."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith(f"pcq {role}:")), "")
    return {key: int(value) for key, value in re.findall(r"(\w+)=(-?\d+)", line)}


def pcq_flushes(stdout: str) -> str:
    """pcq's cache line, checked to say the instructions ran ("pcq cache: on ... N flushes")."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith("pcq cache:")), "")
    found = re.search(r"(\d+) flushes", line)
    assert line.startswith("pcq cache: on") and found, f"no cache instructions: {line!r}"
    assert int(found.group(1)) >= PCQ_MESSAGES, line
    return line


def manifest(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            full = Path(dirpath) / name
            out[str(full.relative_to(root))] = sha256(full)
    return out


def mapped_mailbox(state: State, me: str, peer: str):
    """The mailbox mapped "r+" here, once the peer has mapped it too (either side's failure
    to map is told to the other, so neither waits for nothing)."""
    from famfs_py import open_mapped

    try:
        box = open_mapped(state.mountpoint / "mailbox", "r+")
    except OSError as exc:
        tell(f"{me}.mapped", {"error": str(exc)})
        raise
    tell(f"{me}.mapped", {})
    theirs = hear(f"{peer}.mapped", peer)
    if isinstance(theirs, dict) and theirs.get("error"):
        box.close()
        raise AssertionError(f"guest {peer} could not map the mailbox: {theirs['error']}")
    return box


# -- the master (guest A) --------------------------------------------------------------------
@MASTER.check("mkfs_mount")
def master_mkfs_mount(state: State) -> str:
    cli("--devdax", DEVICE, prog="mkfs.famfs-py")
    state.mountpoint.mkdir(parents=True, exist_ok=True)
    return cli("mount", "--devdax", DEVICE, state.mountpoint).stdout.strip()


@MASTER.check("create_before", needs="mkfs_mount")
def master_create_before(state: State) -> None:
    cli("mkdir", "-p", state.mountpoint / "early")
    files = [f"{state.mountpoint / n},{size},{seed}" for n, (size, seed) in BEFORE.items()]
    files += [f"{state.mountpoint / 'from_client'},4m", f"{state.mountpoint / 'mailbox'},4k"]
    files += [f"{state.mountpoint / 'shared'},8m"]
    cli("creat", *(arg for f in files for arg in ("-M", f)))  # one process: imports cost
    tell("A.ready", {name: sha256(state.mountpoint / name) for name in BEFORE})


@MASTER.check("create_while_client_mounted", needs="create_before")
def master_create_after(state: State) -> str:
    hear("B.mounted", "B")
    cli("mkdir", "-p", state.mountpoint / "late/deeper")
    files = [f"{state.mountpoint / n},{size},{seed}" for n, (size, seed) in AFTER.items()]
    cli("creat", *(arg for f in files for arg in ("-M", f)))
    source = Path("/root/tree")
    for seed, (name, size) in enumerate(TREE.items(), start=40):
        file = source / Path(name).relative_to("late/tree")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(pattern(seed, size))
    cli("cp", "-r", source, state.mountpoint / "late/tree")
    names = [*AFTER, *TREE]
    tell("A.after", {name: sha256(state.mountpoint / name) for name in names})
    untarred = untar(state)
    tell("A.untar", untarred)
    return f"{len(names)} files created, {len(untarred)} by tar -x through the mount"


def untar(state: State) -> dict[str, list]:
    """tar -x of a small tree straight through the master's mount (no famfs-py command)."""
    source = Path("/root/untar")
    for seed, (name, (size, mode)) in enumerate(UNTAR.items(), start=60):
        file = source / Path(name).relative_to("late/untar")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(pattern(seed, size))
        file.chmod(mode)
    (source / "sub").chmod(UNTAR_DIR_MODE)
    archive = Path("/root/untar.tar")
    subprocess.run(["tar", "-C", source, "-cf", archive, "."], check=True)
    target = state.mountpoint / "late/untar"
    target.mkdir()  # an ordinary mkdir through the mount
    done = subprocess.run(["tar", "-C", target, "-xf", archive], capture_output=True, text=True)
    assert done.returncode == 0, f"tar -x through the mount: {done.stderr}"
    out: dict[str, list] = {
        name: [sha256(state.mountpoint / name), mode] for name, (_, mode) in UNTAR.items()
    }
    out["late/untar/sub"] = ["", UNTAR_DIR_MODE]
    return out


@MASTER.check("reads_client_write", needs="create_while_client_mounted")
def master_reads_client_write(state: State) -> None:
    wrote = hear("B.wrote", "B")
    assert isinstance(wrote, dict)
    assert sha256(state.mountpoint / "from_client") == wrote["sha256"], "not the client's bytes"


@MASTER.check("mapped_exchange", needs="create_before")
def master_mapped_exchange(state: State) -> str:
    with mapped_mailbox(state, "A", "B") as box:
        started = time.monotonic()
        for i in range(1, ROUNDS + 1):
            box[0:4] = i.to_bytes(4, "little")
            spins = 0
            while int.from_bytes(box[4:8], "little") != i:  # loads only: no system call
                spins += 1
                if spins % 200_000 == 0 and time.monotonic() - started > PEER_WAIT:
                    raise AssertionError(f"round {i}: the client never echoed")
        seconds = time.monotonic() - started
    return f"{ROUNDS} round trips in {seconds:.2f} s"


@MASTER.check("pcq_producer", needs="create_before")
def master_pcq_producer(state: State) -> str:
    queue = state.mountpoint / "queue"
    cli("pcq", "--create", "--bsize", "1024", "--nbuckets", "1024", queue)
    tell("A.queue")
    consuming = hear("B.consuming", "B")
    if isinstance(consuming, dict) and consuming.get("error"):
        raise AssertionError(f"guest B could not start its consumer: {consuming['error']}")
    started = time.monotonic()
    run = cli("pcq", "--producer", "-N", PCQ_MESSAGES, "--seed", PCQ_SEED, queue, timeout=900)
    seconds = time.monotonic() - started
    sent = pcq_counts(run.stdout, "producer")
    assert sent.get("nsent") == PCQ_MESSAGES, run.stdout
    cache = pcq_flushes(run.stdout)
    received = hear("B.pcq", "B")
    assert isinstance(received, dict), received
    assert received.get("nreceived") == PCQ_MESSAGES, received
    assert received.get("nerrors") == 0, received
    return (
        f"{PCQ_MESSAGES} messages (1 KiB buckets) to guest B in {seconds:.1f} s "
        f"({PCQ_MESSAGES / seconds:,.0f}/s under TCG), B: {received}; here {cache}"
    )


@MASTER.check("shared_through_the_mount", needs="create_before")
def master_shared(state: State) -> str:
    """Changes through the master's mount; the client judges what its mount shows."""
    import mmap

    hear("B.shared_mapped", "B")
    path = state.mountpoint / "shared"
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, SHARED_WRITE, 0)  # write()
        with mmap.mmap(fd, 0, mmap.MAP_SHARED) as m:  # msync'd MAP_SHARED stores
            m[4096 : 4096 + len(SHARED_PAGE)] = SHARED_PAGE
            m[2 * MiB : 4 * MiB] = SHARED_RANGE
            m.flush()
        with mmap.mmap(fd, 0, mmap.MAP_PRIVATE) as m:  # never leaves this host
            m[6 * MiB : 6 * MiB + 4096] = b"p" * 4096
            m.flush()
    finally:
        os.close(fd)
    tell("A.shared_written")
    said = hear("B.shared_seen", "B")
    assert isinstance(said, dict) and not said.get("error"), said
    return f"the client saw them: {said}"


@MASTER.check("table_exchange", needs="create_before")
def master_table_exchange(state: State) -> str:
    import numpy
    import pyarrow

    from famfs_py import arrow

    ids = numpy.arange(TABLE_ROWS, dtype=numpy.int64)
    table = pyarrow.table({"id": ids, "x": ids * 0.5})
    arrow.write_table(table, state.mountpoint / "table.arrow")
    tell("A.table", {"rows": TABLE_ROWS, "sum": int(ids.sum())})
    theirs = hear("B.table", "B")
    assert isinstance(theirs, dict) and not theirs.get("error"), theirs
    return f"{TABLE_ROWS} rows written; the client read {theirs}"


@MASTER.check("manifest", needs="create_before")
def master_manifest(state: State) -> str:
    hear("B.done", "B")
    files = manifest(state.mountpoint)
    tell("A.manifest", files)
    cli("umount", state.mountpoint)
    return f"{len(files)} files"


# -- the client (guest B) --------------------------------------------------------------------
@CLIENT.check("mount_rw")
def client_mount(state: State) -> str:
    before = hear("A.ready", "A")
    state.expected.update(before)  # type: ignore[arg-type]
    state.mountpoint.mkdir(parents=True, exist_ok=True)
    out = cli("mount", "--devdax", "--rw", DEVICE, state.mountpoint).stdout.strip()
    info = json.loads(cli("status", "--json", state.mountpoint).stdout)
    assert info["role"] == "client" and info["writable_data"], info
    tell("B.mounted")
    return out


@CLIENT.check("reads_before", needs="mount_rw")
def client_reads_before(state: State) -> None:
    bad = [n for n, d in state.expected.items() if sha256(state.mountpoint / n) != d]
    assert not bad, f"differ: {bad}"


@CLIENT.check("follows_log", needs="mount_rw")
def client_follows_log(state: State) -> str:
    after = hear("A.after", "A")
    assert isinstance(after, dict)
    started = time.monotonic()
    wait_until(
        lambda: all((state.mountpoint / n).exists() for n in after),
        60,
        "the master's new files to appear (no command run here)",
    )
    seen = time.monotonic() - started
    bad = [n for n, d in after.items() if sha256(state.mountpoint / n) != d]
    assert not bad, f"differ: {bad}"
    return f"{len(after)} new files visible {seen:.1f} s after the master said so, byte-exact"


@CLIENT.check("sees_tar_x", needs="mount_rw")
def client_sees_tar_x(state: State) -> str:
    """What tar -x made through the master's mount appears here whole, with its modes."""
    untarred = hear("A.untar", "A")
    assert isinstance(untarred, dict)
    root = state.mountpoint
    wait_until(lambda: all((root / n).exists() for n in untarred), 60, "the master's tar -x tree")
    for name, (digest, mode) in untarred.items():
        assert (root / name).stat().st_mode & 0o7777 == mode, f"{name}: mode"
        if digest:
            assert sha256(root / name) == digest, f"{name}: bytes differ"
    return f"{len(untarred)} entries from tar -x, byte-exact, modes kept"


@CLIENT.check("writes_for_master", needs="mount_rw")
def client_writes(state: State) -> None:
    data = pattern(77, 4 * MiB - 1000)
    with open(state.mountpoint / "from_client", "r+b") as f:
        f.write(data)
    content = (state.mountpoint / "from_client").read_bytes()
    assert content[: len(data)] == data
    tell("B.wrote", {"sha256": sha256(state.mountpoint / "from_client")})


@CLIENT.check("mapped_exchange", needs="mount_rw")
def client_mapped_exchange(state: State) -> str:
    with mapped_mailbox(state, "B", "A") as box:
        started = time.monotonic()
        last = spins = 0
        while last < ROUNDS:
            seen = int.from_bytes(box[0:4], "little")  # loads only: no system call
            if seen != last:
                box[4:8] = seen.to_bytes(4, "little")
                last = seen
            spins += 1
            if spins % 200_000 == 0 and time.monotonic() - started > PEER_WAIT:
                raise AssertionError(f"stuck after round {last}")
    return f"echoed {ROUNDS} rounds"


@CLIENT.check("pcq_consumer", needs="mount_rw")
def client_pcq_consumer(state: State) -> str:
    queue = state.mountpoint / "queue"
    hear("A.queue", "A")
    try:  # the master's queue files appear here by the client's own log follow
        wait_until(lambda: queue.exists() and Path(f"{queue}.consumer").exists(), 60, "the queue")
        args = ["pcq", "--consumer", "-N", PCQ_MESSAGES, "--seed", PCQ_SEED, queue]
        consumer = subprocess.Popen(
            [str(BIN / "famfs-py"), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    except Exception as exc:
        tell("B.consuming", {"error": str(exc)})
        raise
    tell("B.consuming", {})
    try:
        out, err = consumer.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        consumer.kill()
        out, err = consumer.communicate()
    counts = pcq_counts(out, "consumer")
    tell("B.pcq", counts)
    assert consumer.returncode == 0, f"consumer exit {consumer.returncode}: {(out + err)[-600:]}"
    assert counts.get("nreceived") == PCQ_MESSAGES and counts.get("nerrors") == 0, out
    return f"{counts}; {pcq_flushes(out)}"


@CLIENT.check("shared_through_the_mount", needs="mount_rw")
def client_shared(state: State) -> str:
    """An open descriptor and a MAP_SHARED mapping through this mount, read once, then the
    master's changes arrive with no command (the daemons announce and follow them)."""
    import mmap

    path = state.mountpoint / "shared"
    wait_until(path.exists, 60, "the shared file")
    fd = os.open(path, os.O_RDONLY)
    view = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ)
    try:
        assert view[0:8] == bytes(8) and os.pread(fd, 8, 0) == bytes(8)
        tell("B.shared_mapped")
        hear("A.shared_written", "A")
        started = time.monotonic()
        checks = {
            "write: descriptor": lambda: os.pread(fd, 8, 0) == SHARED_WRITE,
            "write: mapping": lambda: view[0:8] == SHARED_WRITE,
            "msync'd page: mapping": lambda: view[4096 : 4096 + 8] == SHARED_PAGE[:8],
            "msync'd 2 MiB: mapping": lambda: view[2 * MiB : 4 * MiB] == SHARED_RANGE,
            "msync'd 2 MiB: descriptor": lambda: os.pread(fd, 2 * MiB, 2 * MiB) == SHARED_RANGE,
        }
        for what, check in checks.items():
            wait_until(check, 60, f"the client's {what}")
        seconds = time.monotonic() - started
        with open(path, "rb") as fresh:
            assert os.pread(fresh.fileno(), 8, 0) == SHARED_WRITE, "a fresh open"
        assert view[6 * MiB : 6 * MiB + 4096] == bytes(4096), "a MAP_PRIVATE store arrived"
        assert os.pread(fd, 4096, 6 * MiB) == bytes(4096), "a MAP_PRIVATE store reached memory"
    except BaseException as exc:
        tell("B.shared_seen", {"error": str(exc)})
        raise
    finally:
        view.close()
        os.close(fd)
    tell("B.shared_seen", {"seconds": round(seconds, 2)})
    return f"write and msync'd stores seen {seconds:.2f} s after the master said so"


@CLIENT.check("table_exchange", needs="mount_rw")
def client_table_exchange(state: State) -> str:
    told = hear("A.table", "A")
    path = state.mountpoint / "table.arrow"
    try:
        import pyarrow.compute

        from famfs_py import arrow

        wait_until(path.exists, 60, "the master's table")
        table = arrow.read_table(path)
        got = {"rows": table.num_rows, "sum": pyarrow.compute.sum(table["id"]).as_py()}
        address = table["id"].chunk(0).buffers()[1].address
        with open("/proc/self/maps") as f:
            spans = [ln.split()[0] for ln in f if ln.rstrip().endswith(str(DEVICE))]
        in_device = any(
            int(lo, 16) <= address < int(hi, 16) for lo, hi in (s.split("-") for s in spans)
        )
    except Exception as exc:
        tell("B.table", {"error": str(exc)})
        raise
    tell("B.table", {**got, "in_device": in_device})
    assert got == told, f"read {got}, the master wrote {told}"
    assert in_device, f"the table's buffers are not in a mapping of {DEVICE}: {spans}"
    return f"{got}, its buffers in this guest's mapping of {DEVICE}"


@CLIENT.check("umount", needs="mount_rw")
def client_umount(state: State) -> None:
    cli("umount", state.mountpoint)
    assert not is_mounted(state.mountpoint)
    tell("B.done")
