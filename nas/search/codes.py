"""Keys for rows of code matrices: hashable bytes for set and dict lookups."""
from __future__ import annotations

import numpy as np


def packed_rows(codes: np.ndarray, radices: np.ndarray) -> list[bytes]:
    """One bytes object per row, built in C (for set and dict lookups over many candidates).

    Codes pack into one byte each when every radix fits. numpy strips trailing zero bytes
    from fixed-width byte strings, which keeps rows of equal length distinct, so the
    packing stays one-to-one.
    """
    codes = np.atleast_2d(codes)
    small = np.ascontiguousarray(codes.astype(np.uint8 if int(np.max(radices, initial=0)) <= 256 else np.int64))
    if small.shape[1] == 0:
        return [b""] * len(small)
    return small.view(f"S{small.shape[1] * small.itemsize}")[:, 0].tolist()

