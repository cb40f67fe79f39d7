"""The seeded data pattern of `creat -r -S SEED` and `verify -S SEED`, bit-exact with upstream
famfs (its randomize_buffer / validate_random_buffer): the pattern's bytes at any file offset,
buffers filled with it, and the first byte where data departs from it."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

# numpy is a dependency for this module: stepping thousands of generators at once as uint64
# array operations fills or checks about 1 GB/s; a Python loop over words manages about 1 MB/s.
import numpy as np

if TYPE_CHECKING:
    from typing_extensions import Buffer

# The pattern (upstream's xrand_init / xrand64): the seed's low 32 bits start splitmix64, whose
# first two outputs are the state (s0, s1) of xoroshiro128+ in its original 2016 form (rotations
# 55 and 36, shift 14; the output s0 + s1 is taken before the update). Each output gives the
# file one little-endian 4-byte word, its low 32 bits; a trailing partial word takes the first
# bytes of one more output. One stream per file, from file offset 0.
#
# Random access and speed: the state update is linear over GF(2), so the state n steps ahead is
# T^n times the state, T being the 128x128 bit matrix of one update; T^n is a product of cached
# powers T^(2^k). A run of words is cut into many equal segments ("lanes"); each lane starts at
# its own jumped-ahead state, all lanes step together as numpy uint64 operations, and each block
# of steps is transposed into place, so memory writes stay contiguous.
#
# Thread safety: the only shared state is the cache of powers of T, filled under a lock and
# never changed afterwards. numpy releases the GIL inside array operations, so callers may fill
# or check separate chunks in separate threads.

SEED_MASK = 0xFFFFFFFF  # upstream passes the seed as `unsigned int`
WORD = 4  # bytes of the file per generator output

_M64 = (1 << 64) - 1
_SPLITMIX_GAMMA = 0x9E3779B97F4A7C15

# Layout of the vectorized generator (tuned on a 2-core Xeon; see the module docstring).
_LANES = 1 << 15  # target number of segments generated side by side
_MIN_STEPS_LOG2 = 6  # segments are at least 64 words long
_BLOCK_STEPS = 32  # steps generated before a block is transposed into the output
_SCALAR_WORDS = 256  # runs up to this many words use the plain Python generator

_LITTLE = sys.byteorder == "little"
_LOW_HALF = 0 if _LITTLE else 1  # index of a uint64's low 32 bits in its uint32 view
_U64 = np.uint64


def pattern_seed(seed: int) -> int:
    """The 32-bit seed upstream uses for `seed`; ValueError if it is 0 (no pattern)."""
    seed32 = seed & SEED_MASK
    if seed32 == 0:
        raise ValueError(f"seed {seed:#x} has zero low 32 bits: it selects no pattern")
    return seed32


# --- The generator on Python ints. A state is one 128-bit int: s0 | s1 << 64. -------------


def _initial_state(seed32: int) -> int:
    """splitmix64 started at the seed: its first output is s0, its second s1."""
    words = []
    x = seed32
    for _ in range(2):
        x = (x + _SPLITMIX_GAMMA) & _M64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        words.append(z ^ (z >> 31))
    return words[0] | words[1] << 64


def _rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (64 - k))) & _M64


def _advance(state: int) -> int:
    """One xoroshiro128+ state update (linear over GF(2); the output is not part of it)."""
    s0 = state & _M64
    s1 = (state >> 64) ^ s0
    return (_rotl(s0, 55) ^ s1 ^ ((s1 << 14) & _M64)) | _rotl(s1, 36) << 64


def _scalar_words(state: int, count: int) -> np.ndarray:
    """`count` pattern words (uint32) from `state`, one Python step each."""
    out = np.empty(count, dtype=np.uint32)
    for i in range(count):
        out[i] = ((state & _M64) + (state >> 64)) & SEED_MASK
        state = _advance(state)
    return out


# --- Jump-ahead: bit matrices as 128 column ints (column i = image of bit i). ---------------


def _byte_tables(columns: list[int]) -> list[list[int]]:
    """For each of the 16 state bytes, the image of all 256 values of that byte."""
    tables = []
    for k in range(16):
        cols = columns[8 * k : 8 * k + 8]
        table = [0] * 256
        for value in range(1, 256):
            low = value & -value
            table[value] = table[value ^ low] ^ cols[low.bit_length() - 1]
        tables.append(table)
    return tables


def _apply_tables(tables: list[list[int]], state: int) -> int:
    image = 0
    for k in range(16):
        image ^= tables[k][(state >> (8 * k)) & 0xFF]
    return image


def _apply_columns(columns: list[int], state: int) -> int:
    image = 0
    while state:
        low = state & -state
        image ^= columns[low.bit_length() - 1]
        state ^= low
    return image


class _JumpCache:
    """T^(2^k) for the k used so far, as columns and as numpy lookup tables. Entries are
    added under the lock and never modified, so readers need no lock once they hold one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._columns: list[list[int]] = []
        self._tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def columns(self, k: int) -> list[int]:
        if k < len(self._columns):
            return self._columns[k]
        with self._lock:
            if not self._columns:
                self._columns.append([_advance(1 << i) for i in range(128)])
            while len(self._columns) <= k:
                square = self._columns[-1]
                tables = _byte_tables(square)
                self._columns.append([_apply_tables(tables, col) for col in square])
            return self._columns[k]

    def tables(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(low, high): [16, 256] uint64 images of each state byte's values under T^(2^k)."""
        found = self._tables.get(k)
        if found is not None:
            return found
        tables = _byte_tables(self.columns(k))
        flat = [image for table in tables for image in table]
        low = np.array([image & _M64 for image in flat], dtype=np.uint64).reshape(16, 256)
        high = np.array([image >> 64 for image in flat], dtype=np.uint64).reshape(16, 256)
        with self._lock:
            return self._tables.setdefault(k, (low, high))


_jumps = _JumpCache()


def _jump(state: int, steps: int) -> int:
    """The state `steps` updates after `state`."""
    k = 0
    while steps:
        if steps & 1:
            state = _apply_columns(_jumps.columns(k), state)
        steps >>= 1
        k += 1
    return state


def _state_at_word(seed32: int, word: int) -> int:
    return _jump(_initial_state(seed32), word)


# --- The vectorized generator. -------------------------------------------------------------


_BYTE_BASE = np.arange(16, dtype=np.intp)[:, None] * 256  # each state byte's row in a table


def _jump_lanes(k: int, s0: np.ndarray, s1: np.ndarray, out0: np.ndarray, out1: np.ndarray) -> None:
    """out = T^(2^k) applied to each lane's state (s0, s1): XOR of 16 table lookups, one per
    state byte."""
    low, high = _jumps.tables(k)
    index = np.empty((16, s0.shape[0]), dtype=np.intp)
    order = slice(None) if _LITTLE else slice(None, None, -1)
    index[:8] = s0.view(np.uint8).reshape(-1, 8)[:, order].T
    index[8:] = s1.view(np.uint8).reshape(-1, 8)[:, order].T
    index += _BYTE_BASE
    np.bitwise_xor.reduce(low.ravel()[index], axis=0, out=out0)
    np.bitwise_xor.reduce(high.ravel()[index], axis=0, out=out1)


def _lane_states(state: int, steps_log2: int, lanes: int) -> tuple[np.ndarray, np.ndarray]:
    """Lane j's state is `state` advanced j * 2^steps_log2 times: by doubling, lanes
    [m, 2m) are lanes [0, m) advanced m * 2^steps_log2 = 2^k steps."""
    s0 = np.empty(lanes, dtype=np.uint64)
    s1 = np.empty(lanes, dtype=np.uint64)
    s0[0] = state & _M64
    s1[0] = state >> 64
    done, k = 1, steps_log2
    while done < lanes:
        n = min(done, lanes - done)
        _jump_lanes(k, s0[:n], s1[:n], s0[done : done + n], s1[done : done + n])
        done += n
        k += 1
    return s0, s1


class _Layout(NamedTuple):
    """How `count` words are cut into lanes: lane j makes words [j * steps, (j + 1) * steps);
    lanes [0, full) are whole and lane `full` holds the last `partial` words, if any."""

    steps_log2: int
    lanes: int
    full: int
    partial: int

    @property
    def steps(self) -> int:
        return 1 << self.steps_log2

    @classmethod
    def of(cls, count: int) -> _Layout:
        steps_log2 = max(_MIN_STEPS_LOG2, (-(-count // _LANES) - 1).bit_length())
        full, partial = divmod(count, 1 << steps_log2)
        return cls(steps_log2, full + (partial > 0), full, partial)


def _blocks(state: int, layout: _Layout) -> Iterator[tuple[int, np.ndarray]]:
    """(start, block) for each block of steps: block[t, j] is word j * steps + start + t.
    The block array is reused: consume it before asking for the next."""
    s0, s1 = _lane_states(state, layout.steps_log2, layout.lanes)
    s0_low = s0.view(np.uint32)[_LOW_HALF::2]
    s1_low = s1.view(np.uint32)[_LOW_HALF::2]
    t1 = np.empty_like(s0)
    t2 = np.empty_like(s0)
    block_steps = min(_BLOCK_STEPS, layout.steps)
    block = np.empty((block_steps, layout.lanes), dtype=np.uint32)
    r55, r9, r14, r36, r28 = _U64(55), _U64(9), _U64(14), _U64(36), _U64(28)
    add, xor, ior, shl, shr = np.add, np.bitwise_xor, np.bitwise_or, np.left_shift, np.right_shift
    for start in range(0, layout.steps, block_steps):
        for row in block:
            add(s0_low, s1_low, out=row)  # output: low 32 bits of s0 + s1
            xor(s1, s0, out=s1)  # s1 ^= s0
            shl(s0, r55, out=t1)
            shr(s0, r9, out=s0)
            ior(t1, s0, out=t1)  # rotl(s0, 55)
            xor(t1, s1, out=t1)
            shl(s1, r14, out=t2)
            xor(t1, t2, out=s0)  # s0 = rotl(s0, 55) ^ s1 ^ (s1 << 14)
            shl(s1, r36, out=t2)
            shr(s1, r28, out=s1)
            ior(s1, t2, out=s1)  # s1 = rotl(s1, 36)
        yield start, block


def _write_words(state: int, dest: np.ndarray) -> None:
    """Write the words starting at `state` into `dest` (1-D contiguous uint32 of any byte
    order and alignment)."""
    count = dest.shape[0]
    if count <= _SCALAR_WORDS:
        dest[:] = _scalar_words(state, count)
        return
    layout = _Layout.of(count)
    steps, full, partial = layout.steps, layout.full, layout.partial
    grid = dest[: full * steps].reshape(full, steps)
    last = dest[full * steps :]
    for start, block in _blocks(state, layout):
        n = block.shape[0]
        grid[:, start : start + n] = block[:, :full].T
        if start < partial:
            last[start : start + n] = block[: partial - start, full]


def _find_word(state: int, actual: np.ndarray) -> int | None:
    """Index of the first word of `actual` (as for _write_words) that differs from the words
    starting at `state`, or None. Compares block by block, without materializing the pattern:
    once lane j has a mismatch only lanes before it can hold an earlier one."""
    count = actual.shape[0]
    if count <= _SCALAR_WORDS:
        differs = actual != _scalar_words(state, count)
        return int(differs.argmax()) if differs.any() else None
    layout = _Layout.of(count)
    steps, full, partial = layout.steps, layout.full, layout.partial
    grid = actual[: full * steps].reshape(full, steps)
    last = actual[full * steps :]
    found = None
    suspects = full  # whole lanes that may still hold the first mismatch
    check_last = partial > 0
    for start, block in _blocks(state, layout):
        n = block.shape[0]
        if suspects:
            differs = grid[:suspects, start : start + n] != block[:, :suspects].T
            if differs.any():
                lane = int(differs.any(axis=1).argmax())
                found = lane * steps + start + int(differs[lane].argmax())
                suspects = lane
                check_last = False
        if check_last and start < partial:
            differs = last[start : start + n] != block[: partial - start, full]
            if differs.any():
                found = full * steps + start + int(differs.argmax())
                check_last = False
        if not suspects and not check_last:
            break
    return found


# --- Public API. ---------------------------------------------------------------------------


def _byte_array(buf: object) -> np.ndarray:
    """A flat uint8 view of any contiguous buffer (bytes, bytearray, memoryview, mmap,
    numpy array)."""
    return np.frombuffer(buf, dtype=np.uint8)  # type: ignore[call-overload]


def _word_bytes(seed32: int, word: int) -> np.ndarray:
    """The 4 file bytes of one pattern word."""
    return _scalar_words(_state_at_word(seed32, word), 1).astype("<u4").view(np.uint8)


class _Span(NamedTuple):
    """File bytes [offset, offset + length) as: `head` bytes ending word first_word - 1
    (when offset is not word aligned), `words` whole words from first_word, `tail` bytes
    starting word first_word + words."""

    head: int
    first_word: int
    words: int
    tail: int

    @classmethod
    def of(cls, offset: int, length: int) -> _Span:
        head = min(-offset % WORD, length)
        words, tail = divmod(length - head, WORD)
        return cls(head, -(-offset // WORD), words, tail)

    def middle(self, array: np.ndarray) -> np.ndarray:
        """The whole words of `array` (the span's bytes) as little-endian uint32."""
        return array[self.head : self.head + self.words * WORD].view("<u4")


def _check_args(seed: int, offset: int) -> int:
    if offset < 0:
        raise ValueError(f"negative file offset {offset}")
    return pattern_seed(seed)


def fill(buf: Buffer, seed: int, offset: int) -> None:
    """Write the pattern of `seed` for file bytes [offset, offset + nbytes) into `buf`, any
    writable C-contiguous buffer of nbytes bytes (a bytearray, a writable memoryview or mmap,
    a numpy array of any dtype). Scratch memory: about 5 MiB, whatever the size of `buf`."""
    seed32 = _check_args(seed, offset)
    if memoryview(buf).nbytes == 0:
        return
    out = _byte_array(buf)
    if not out.flags.writeable:
        raise TypeError("fill() needs a writable buffer")
    span = _Span.of(offset, out.shape[0])
    if span.head:
        skip = offset % WORD
        out[: span.head] = _word_bytes(seed32, offset // WORD)[skip : skip + span.head]
    if span.words:
        _write_words(_state_at_word(seed32, span.first_word), span.middle(out))
    if span.tail:
        out[-span.tail :] = _word_bytes(seed32, span.first_word + span.words)[: span.tail]


def pattern_bytes(seed: int, offset: int, length: int) -> bytearray:
    """File bytes [offset, offset + length) of the pattern of `seed`, as a new bytearray."""
    if length < 0:
        raise ValueError(f"negative length {length}")
    out = bytearray(length)
    fill(out, seed, offset)
    return out


def first_mismatch(data: Buffer, seed: int, offset: int) -> int | None:
    """The file offset of the first byte of `data` (file bytes [offset, offset + nbytes))
    that differs from the pattern of `seed`, or None if every byte matches.

    Upstream's verify reports the offset of the first bad 4-byte word; this reports the exact
    byte (round it down to a multiple of 4 for upstream's number). Scratch memory: about
    6 MiB, whatever the size of `data`.
    """
    seed32 = _check_args(seed, offset)
    if memoryview(data).nbytes == 0:
        return None
    actual = _byte_array(data)
    length = actual.shape[0]
    span = _Span.of(offset, length)
    if span.head:
        skip = offset % WORD
        expected = _word_bytes(seed32, offset // WORD)[skip : skip + span.head]
        bad = _first_differing_byte(offset, actual[: span.head], expected)
        if bad is not None:
            return bad
    if span.words:
        word = _find_word(_state_at_word(seed32, span.first_word), span.middle(actual))
        if word is not None:
            start = span.head + word * WORD
            expected = _word_bytes(seed32, span.first_word + word)
            return _first_differing_byte(offset + start, actual[start : start + WORD], expected)
    if span.tail:
        expected = _word_bytes(seed32, span.first_word + span.words)[: span.tail]
        return _first_differing_byte(offset + length - span.tail, actual[-span.tail :], expected)
    return None


def _first_differing_byte(at: int, actual: np.ndarray, expected: np.ndarray) -> int | None:
    differs = actual != expected
    return at + int(differs.argmax()) if differs.any() else None
