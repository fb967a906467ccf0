"""Byte mutation for the fuzz bench: plain `random`, fast and reproducible from a seed.

`mutate(rng, seed_inputs)` takes one of the real inputs (a captured packet, a
well-formed request) and applies a few of the classic operators: flip bits,
overwrite bytes with boundary values, insert, delete, duplicate or splice in a
piece of another input, truncate, or stamp a 16/32-bit boundary number over a
length field. One input in `RANDOM_SHARE` is plain random bytes instead.
"""

from __future__ import annotations

import random
import struct

RANDOM_SHARE = 0.1
UNCHANGED_SHARE = 0.1  # a seed as it is: the well-formed path, in whatever state the server is
INTERESTING_BYTES = (0, 1, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xFE, 0xFF)
INTERESTING_U16 = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x3FFF, 0x7FFF, 0x8000, 0xFFFF)
INTERESTING_U32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def random_bytes(rng: random.Random, max_len: int) -> bytes:
    return rng.randbytes(rng.randint(0, max_len))


def _one_edit(rng: random.Random, buf: bytearray, seeds: list[bytes]) -> None:
    n = len(buf)
    op = rng.randrange(10)
    if n == 0 or op == 0:  # insert random bytes
        pos = rng.randint(0, n)
        buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
    elif op == 1:  # flip a bit
        buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif op == 2:  # a boundary byte
        buf[rng.randrange(n)] = rng.choice(INTERESTING_BYTES)
    elif op == 3:  # a random byte
        buf[rng.randrange(n)] = rng.randrange(256)
    elif op == 4:  # delete a range
        pos = rng.randrange(n)
        del buf[pos:pos + rng.randint(1, 32)]
    elif op == 5:  # duplicate a range somewhere
        pos = rng.randrange(n)
        piece = buf[pos:pos + rng.randint(1, 64)]
        at = rng.randint(0, n)
        buf[at:at] = piece
    elif op == 6:  # splice in a piece of another seed
        other = rng.choice(seeds)
        if other:
            pos = rng.randrange(len(other))
            piece = other[pos:pos + rng.randint(1, 64)]
            at = rng.randrange(n)
            buf[at:at + len(piece)] = piece
    elif op == 7:  # truncate
        del buf[rng.randint(0, n):]
    elif op == 8 and n >= 2:  # a boundary 16-bit number (lengths, counts, ports)
        pos = rng.randrange(n - 1)
        buf[pos:pos + 2] = struct.pack("!H", rng.choice(INTERESTING_U16))
    elif n >= 4:  # a boundary 32-bit number
        pos = rng.randrange(n - 3)
        buf[pos:pos + 4] = struct.pack("!I", rng.choice(INTERESTING_U32))


def mutate(rng: random.Random, seeds: list[bytes], max_len: int = 1500,
           random_share: float = RANDOM_SHARE) -> bytes:
    """A mutated copy of one seed (1-8 edits, mostly 1 or 2), random bytes `random_share`
    of the time, or the seed unchanged `UNCHANGED_SHARE` of the time."""
    roll = rng.random()
    if roll < random_share:
        return random_bytes(rng, max_len)
    if roll < random_share + UNCHANGED_SHARE:
        return rng.choice(seeds)[:max_len]
    buf = bytearray(rng.choice(seeds))
    for _ in range(1 + int(rng.expovariate(1.0)) % 8):
        _one_edit(rng, buf, seeds)
    return bytes(buf[:max_len])


def mutate_text(rng: random.Random, seeds: list[str], max_len: int = 600,
                random_share: float = RANDOM_SHARE) -> str:
    """The same over text as WSGI hands it over: bytes decoded as latin-1 (PEP 3333)."""
    raw = mutate(rng, [s.encode("latin-1") for s in seeds], max_len, random_share)
    return raw.decode("latin-1")
