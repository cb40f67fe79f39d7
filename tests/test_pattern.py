"""The seeded data pattern: bit-exact with upstream's worked values and with a slow oracle
written from the algorithm's definition, at any offset, and verify finds the first bad byte."""

from __future__ import annotations

import array
import itertools
import random
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from famfs_py.fs import pattern
from famfs_py.fs.pattern import first_mismatch, pattern_bytes

pytestmark = pytest.mark.model  # the model tier: no FUSE, in this process

M64 = (1 << 64) - 1
MiB = 1 << 20
ORACLE_BYTES = 10 * MiB + 7
ORACLE_SEED = 0x5EED


class Oracle:
    """xoroshiro128+ (2016 form) seeded by splitmix64 from the seed's low 32 bits, one plain
    step at a time: the independent reference, far too slow for real use."""

    def __init__(self, seed: int) -> None:
        x = seed & 0xFFFFFFFF
        words = []
        for _ in range(2):
            x = (x + 0x9E3779B97F4A7C15) & M64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            words.append(z ^ (z >> 31))
        self.s0, self.s1 = words

    def next(self) -> int:
        s0, s1 = self.s0, self.s1
        result = (s0 + s1) & M64
        s1 ^= s0
        self.s0 = (((s0 << 55) | (s0 >> 9)) & M64) ^ s1 ^ ((s1 << 14) & M64)
        self.s1 = ((s1 << 36) | (s1 >> 28)) & M64
        return result

    def stream(self, nbytes: int) -> bytes:
        words = array.array("I", (self.next() & 0xFFFFFFFF for _ in range(-(-nbytes // 4))))
        if sys.byteorder == "big":
            words.byteswap()
        return words.tobytes()[:nbytes]


@pytest.fixture(scope="module")
def oracle_stream() -> bytes:
    return Oracle(ORACLE_SEED).stream(ORACLE_BYTES)


WORKED = [
    (1, "28 49 91 ee 66 b6 fb 34 3a 87 ca 18 de 44 17 78"),
    (42, "98 5f 52 e2 7a fb 0c 3d f8 8c 82 2b 40 22 49 e5"),
    (0xDEADBEEF, "bd f4 6a aa 2e fa ef de ea 1e 61 35 22 77 41 1a"),
]


@pytest.mark.parametrize(("seed", "expected"), WORKED)
def test_first_bytes_match_upstreams_worked_values(seed, expected):
    assert pattern_bytes(seed, 0, 16) == bytes.fromhex(expected)
    assert Oracle(seed).stream(16) == bytes.fromhex(expected)


def test_a_trailing_partial_word_takes_the_first_bytes_of_one_more_output():
    assert pattern_bytes(1, 0, 6) == bytes.fromhex("28 49 91 ee 66 b6")


def test_seed_is_truncated_to_its_low_32_bits():
    assert pattern_bytes(0x100000001, 0, 4096) == pattern_bytes(1, 0, 4096)
    assert pattern_bytes(0xABCD_0000_0001_2345, 999, 5000) == pattern_bytes(0x12345, 999, 5000)


@pytest.mark.parametrize("seed", [0, 1 << 32, 0xFFFF_FFFF_0000_0000])
def test_seed_without_low_32_bits_is_refused(seed):
    with pytest.raises(ValueError, match="zero low 32 bits"):
        pattern_bytes(seed, 0, 16)
    with pytest.raises(ValueError):
        first_mismatch(b"abcd", seed, 0)


def test_negative_offsets_and_lengths_are_refused():
    with pytest.raises(ValueError):
        pattern_bytes(1, -1, 4)
    with pytest.raises(ValueError):
        pattern_bytes(1, 0, -4)
    with pytest.raises(ValueError):
        first_mismatch(b"abcd", 1, -4)


def test_every_small_offset_and_length_matches_the_oracle(oracle_stream):
    for offset in range(9):
        for length in range(13):
            assert (
                pattern_bytes(ORACLE_SEED, offset, length)
                == oracle_stream[offset : offset + length]
            ), (offset, length)


def test_random_offsets_and_lengths_match_the_oracle(oracle_stream):
    rnd = random.Random(20240501)
    for _ in range(150):
        offset = rnd.randrange(ORACLE_BYTES)
        limit = rnd.choice([8, 300, 5000, 100_000, ORACLE_BYTES])
        length = rnd.randrange(min(limit, ORACLE_BYTES - offset) + 1)
        got = pattern_bytes(ORACLE_SEED, offset, length)
        assert got == oracle_stream[offset : offset + length], (offset, length)


@pytest.mark.parametrize("offset", [0, 1, 2, 3])
def test_about_ten_megabytes_match_the_oracle(oracle_stream, offset):
    length = ORACLE_BYTES - offset - 3
    assert pattern_bytes(ORACLE_SEED, offset, length) == oracle_stream[offset : offset + length]


def test_jump_ahead_equals_stepping():
    oracle = Oracle(ORACLE_SEED)
    start = oracle.s0 | oracle.s1 << 64
    done = 0
    for target in [1, 2, 3, 64, 1000, 4097, 33_333, 100_000]:
        while done < target:
            oracle.next()
            done += 1
        assert pattern._jump(start, target) == oracle.s0 | oracle.s1 << 64, target


def test_lane_starts_equal_scalar_jumps():
    state = pattern._state_at_word(7, 123_456_789)
    s0, s1 = pattern._lane_states(state, 6, 1000)
    for lane in [0, 1, 2, 3, 511, 512, 999]:
        expected = pattern._jump(state, lane * 64)
        assert int(s0[lane]) | int(s1[lane]) << 64 == expected, lane


def test_large_offsets_agree_with_one_long_stream():
    rnd = random.Random(7)
    for base in [0, (1 << 40) + 3, 0x1234_5678_9AB]:
        stream = pattern_bytes(0xC0FFEE, base, 24 * MiB + 5)
        for _ in range(12):
            a = rnd.randrange(len(stream))
            b = rnd.randrange(a, min(len(stream), a + rnd.choice([10, 70_000, 12 * MiB])) + 1)
            assert pattern_bytes(0xC0FFEE, base + a, b - a) == stream[a:b], (base, a, b)


def test_fill_writes_any_writable_buffer_and_nothing_else():
    expected = pattern_bytes(99, 4097, 100_003)
    frame = bytearray(b"\xaa" * (100_003 + 10))
    pattern.fill(memoryview(frame)[5:-5], 99, 4097)
    assert frame[5:-5] == expected
    assert frame[:5] == frame[-5:] == b"\xaa" * 5

    words = np.zeros(25_000, dtype=np.uint32)
    pattern.fill(words, 99, 4097)
    assert words.tobytes() == expected[:100_000]


def test_fill_refuses_a_read_only_buffer():
    with pytest.raises(TypeError):
        pattern.fill(b"\0" * 64, 1, 0)


def test_chunks_filled_in_threads_equal_one_fill():
    base = (1 << 36) + 2
    whole = pattern_bytes(0xFEED, base, 8 * MiB)
    chunked = bytearray(len(whole))
    view = memoryview(chunked)
    cuts = [0, 1, 4099, MiB + 3, 3 * MiB, 5 * MiB + 1, 8 * MiB]
    ranges = list(itertools.pairwise(cuts))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda r: pattern.fill(view[r[0] : r[1]], 0xFEED, base + r[0]), ranges))
    assert chunked == whole


def test_a_cold_jump_cache_filled_from_many_threads_gives_the_same_bytes(monkeypatch):
    expected = pattern_bytes(0xFEED, (1 << 41) + 5, MiB)
    monkeypatch.setattr(pattern, "_jumps", pattern._JumpCache())
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: pattern_bytes(0xFEED, (1 << 41) + 5, MiB), range(8)))
    assert all(result == expected for result in results)


def test_first_mismatch_is_none_on_the_pattern():
    data = pattern_bytes(5, 3, 3 * MiB + 2)
    assert first_mismatch(data, 5, 3) is None
    assert first_mismatch(bytes(data), 5, 3) is None
    assert first_mismatch(b"", 5, 3) is None
    assert first_mismatch(data, 6, 3) == 3  # another seed differs at once


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 1 << 33])
def test_first_mismatch_finds_a_flipped_byte(offset):
    length = 2 * MiB + 5
    clean = pattern_bytes(11, offset, length)
    for where in [0, 1, 2, 3, 4, 5, 1000, 777_777, length - 5, length - 2, length - 1]:
        data = bytearray(clean)
        data[where] ^= 0x10
        assert first_mismatch(data, 11, offset) == offset + where, where


def test_first_mismatch_reports_the_earliest_of_several():
    rnd = random.Random(3)
    for length in [300, 5000, 1 * MiB + 1, 16 * MiB + 7]:
        clean = pattern_bytes(12, 1, length)
        for _ in range(6):
            data = bytearray(clean)
            flips = rnd.sample(range(length), rnd.randrange(1, 6))
            for where in flips:
                data[where] ^= 0xFF
            assert first_mismatch(data, 12, 1) == 1 + min(flips), (length, flips)


def test_first_mismatch_prefers_an_early_word_found_late():
    """Lanes are compared block by block: a mismatch late in lane 3 must beat one at the
    start of lane 1000, and any whole lane beats the last, partial, one."""
    count = 4 * MiB + 9  # words
    layout = pattern._Layout.of(count)
    assert layout.partial and layout.full > 1000
    steps = layout.steps
    clean = pattern_bytes(13, 0, count * 4)
    cases = [
        ([1000 * steps, 3 * steps + steps - 1], 3 * steps + steps - 1),
        ([count - 1, layout.full * steps], layout.full * steps),
        ([count - 1, steps - 1], steps - 1),
        ([layout.full * steps + 2, 5 * steps + 1], 5 * steps + 1),
    ]
    for words, first in cases:
        data = bytearray(clean)
        for word in words:
            data[word * 4 + 2] ^= 1
        assert first_mismatch(data, 13, 0) == first * 4 + 2, words
