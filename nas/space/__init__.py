"""Search spaces: the grammar, architectures as data, LayerSpecs, counters and the builder."""
from nas.space.arch import Arch, Decision
from nas.space.base import SearchSpace
from nas.space.cell import NB201Space
from nas.space.chain import ChainSpace
from nas.space.layers import LayerSpec
from nas.space.registry import load_space, space_files

__all__ = ["Arch", "ChainSpace", "Decision", "LayerSpec", "NB201Space", "SearchSpace", "load_space", "space_files"]
