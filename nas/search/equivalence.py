"""Archs that compute the same function, for the accuracy surrogate.

Two notions, used for two purposes:

- identical networks (`SearchSpace.canonical_codes`: a kernel choice of a layer beyond
  its stage's depth changes nothing built). The search projects every candidate onto
  this form, so no query is ever spent twice on one network.
- equivalent functions (`function_codes`): in an NB201 cell an edge that leaves a node
  no input reaches, or enters a node whose output never reaches the cell's output,
  computes nothing the output sees. Such archs are different networks (the dead ops
  are built and run, so latency differs) and were trained separately in the benchmark
  tables, so they are still queried separately, but the accuracy surrogate describes
  them by their live edges only. It thereby learns that they share one expected
  accuracy and treats their spread as noise (NAS-Bench-201's own analysis merges such
  cells as isomorphic; see Dong & Yang 2020, section 2.1).
"""
from __future__ import annotations

import numpy as np

from nas.space.base import SearchSpace
from nas.space.cell import NB201Space


def function_codes(space: SearchSpace, codes: np.ndarray) -> np.ndarray:
    """Codes with every edge that cannot reach the output set to 'none' (NB201), or the
    space's canonical codes (other spaces)."""
    codes = space.canonical_codes(codes)
    if not isinstance(space, NB201Space):
        return codes
    return space.live_codes(codes)
