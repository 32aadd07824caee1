"""Keyed hashes: what makes a build's split, presented order and deduplication functions of
(seed, row content) alone, never of processing order, worker count or shard size."""

from __future__ import annotations

import xxhash


def digest(*parts: str | bytes) -> str:
    """A 128-bit content hash (xxh3: fast enough to hash every image byte) of the parts, each
    followed by a NUL byte."""
    if all(isinstance(part, str) for part in parts):  # one call for text: the same bytes hashed
        return xxhash.xxh3_128_hexdigest("\x00".join(parts).encode("utf-8") + b"\x00")
    h = xxhash.xxh3_128()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def unit(seed: int, *parts: str) -> float:
    """A uniform number in [0, 1) fixed by the seed and the parts."""
    return int(digest(str(seed), *parts)[:16], 16) / 2**64
