"""Adaptive DRR quantum (docs/original.md §8.5): an EMA of chunk sizes, x10, clamped. Pure."""

from __future__ import annotations

import math

from fyntr.limits import (
    QUANTUM_BURST_FACTOR,
    QUANTUM_DEFAULT_BYTES,
    QUANTUM_EMA_ALPHA,
    QUANTUM_MAX_BYTES,
    QUANTUM_MIN_BYTES,
    QUANTUM_SMALL_CHUNK_BYTES,
)


def round_half_away(value: float) -> int:
    return math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)


def ema_update(avg: float | None, sample: int) -> float:
    """First sample initialises the average; then ``avg += alpha * (sample - avg)``."""
    if avg is None:
        return float(sample)
    return avg + QUANTUM_EMA_ALPHA * (sample - avg)


def recommended_quantum(avg: float | None, default: int = QUANTUM_DEFAULT_BYTES) -> int:
    if avg is None:
        return default
    mean = round_half_away(avg)
    if mean < QUANTUM_SMALL_CHUNK_BYTES:
        return QUANTUM_MIN_BYTES
    return max(QUANTUM_MIN_BYTES, min(mean * QUANTUM_BURST_FACTOR, QUANTUM_MAX_BYTES))
