"""Packed binary codes: the one storage format for hash codes in cbir.

A code of ``n_bits`` bits is stored as ``ceil(n_bits / 8)`` uint8 bytes, most significant bit
first (numpy's ``packbits`` default, which is also what faiss's binary indexes read), padded with
zero bits. Padding is the same for every code, so Hamming distances are unchanged.
"""

from __future__ import annotations

import numpy as np

MAX_BITS = 64


def n_bytes(n_bits: int) -> int:
    """Bytes needed to store ``n_bits`` bits."""
    return (int(n_bits) + 7) // 8


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack an (N, L) array of 0/1 (or bool) values into (N, ceil(L/8)) uint8 codes."""
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"bits must be a 2-D (n_samples, n_bits) array, got shape {bits.shape}")
    if bits.dtype != bool and not np.isin(bits, (0, 1)).all():
        raise ValueError("bits must contain only 0 and 1")
    return np.packbits(bits.astype(bool), axis=1)


def unpack_bits(codes: np.ndarray, n_bits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: (N, ceil(L/8)) uint8 codes to an (N, L) uint8 array of 0/1."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D uint8 array, got {codes.dtype} with shape {codes.shape}")
    if codes.shape[1] != n_bytes(n_bits):
        raise ValueError(f"{n_bits}-bit codes take {n_bytes(n_bits)} bytes, got {codes.shape[1]}")
    return np.unpackbits(codes, axis=1, count=n_bits)
