"""Shared test helpers: the shipped search spaces and the benchmark data folder.

Spaces are discovered at run time from nas.space.space_files(), so every YAML file
added to search_spaces/ (or search_spaces/reference/) is covered by the generic
space tests without editing them. A test asks for them with the argument
`shipped_space_name`, which is parametrised over every shipped space.
"""
from __future__ import annotations

import os
from pathlib import Path

# Tests train in one process on one thread unless they ask otherwise (a fresh interpreter
# without OMP_NUM_THREADS: tests/test_threads.py, tests/supernet/test_workers.py): results
# compared bit for bit must not depend on how many cores the CI machine had free, and
# subprocesses of tests inherit it.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from torch.utils import flop_counter

from nas.space import space_files

# torch's FlopCounterMode counts scaled_dot_product_attention on the CUDA kernels only; the
# CPU kernel the transformer blocks run here gets torch's own SDPA formula (Q·K^T and
# attention·V), so the counters are held to the attention matmuls as to every other one.
_SDPA_CPU = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
if _SDPA_CPU not in flop_counter.flop_registry and _SDPA_CPU.default not in flop_counter.flop_registry:
    @flop_counter.register_flop_formula(_SDPA_CPU)
    def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def shipped_space_names() -> list[str]:
    """Every shipped space, reference networks included, in name order."""
    return sorted(space_files())


def benchmarks_dir() -> Path:
    """$HWNAS_BENCHMARKS, else the shared/benchmarks folder beside the repository."""
    env = os.environ.get("HWNAS_BENCHMARKS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "shipped_space_name" in metafunc.fixturenames:
        metafunc.parametrize("shipped_space_name", shipped_space_names())


@pytest.fixture(scope="session")
def benchmarks() -> Path:
    return benchmarks_dir()



@pytest.fixture(scope="session")
def micro_int8_supernet(tmp_path_factory):
    """(run folder, space) of a micro supernet with precision decisions, trained two epochs
    on the digits with one torch thread (about 15 s); shared by the quantization tests."""
    import torch

    from nas.space import load_space
    from nas.supernet import train
    from nas.supernet.config import config_from_dict
    from tests.supernet_helpers import micro_int8_yaml

    root = tmp_path_factory.mktemp("micro_int8")
    (root / "micro_q.yaml").write_text(micro_int8_yaml("micro_q"))
    config = config_from_dict({"space": str(root / "micro_q.yaml"), "data": {"source": "digits", "crop_padding": 0},
                               "epochs": 2, "batch_size": 32, "checkpoint_every": 0, "quant": {"calib_images": 128}})
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(config, root / "supernet", progress=False)
    finally:
        torch.set_num_threads(before)
    return root / "supernet", load_space(root / "micro_q.yaml")
