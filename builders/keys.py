"""Keyed hashes: what makes a build's split, presented order and deduplication functions of
(seed, row content) alone, never of processing order, worker count or shard size."""

from __future__ import annotations

import xxhash


def digest(*parts: str) -> str:
    """A 128-bit content hash (xxh3) of the texts, each followed by a NUL byte."""
    return xxhash.xxh3_128_hexdigest(_hashed(parts))


def image_digest(data: bytes) -> str:
    """`digest` of an image's bytes (fast enough to hash every image byte), without copying them."""
    h = xxhash.xxh3_128(data)
    h.update(b"\x00")
    return h.hexdigest()


def keyed_fraction(seed: int, *parts: str) -> float:
    """A uniform number in [0, 1) fixed by the seed and the parts: the high 64 bits of their `digest`."""
    return (xxhash.xxh3_128_intdigest(_hashed((str(seed), *parts))) >> 64) / 2**64


def _hashed(parts: tuple[str, ...]) -> bytes:
    """What `digest` hashes: the texts in UTF-8, each followed by a NUL byte."""
    return "\x00".join(parts).encode("utf-8") + b"\x00"
