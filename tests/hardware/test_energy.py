"""Energy: the analytic estimate and its labels, measured counters, imported measurements."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from nas.costs import CounterCost
from nas.errors import NasError
from nas.hardware.devices import load_device
from nas.hardware.energy import AnalyticEnergy, find_energy_counter, import_arch_energy, import_layer_energy
from nas.hardware.lut import LUT, LUTCost
from nas.space import load_space
from nas.space.counters import layer_io_elements, layer_macs, layer_weight_params
from nas.space.tables import unique_layers
from tests.hw_helpers import small_space


class FixedLatency(CounterCost):
    """A real cost source standing in for a LUT: latency in ms = MACs / 1e6."""

    def __init__(self, space):
        super().__init__(space, "macs")
        self.metric, self.unit = "latency", "ms"

    def predict(self, archs):
        return super().predict(archs) / 1e6

    def expected(self, probs):
        return super().expected(probs) / 1e6


def test_estimate_follows_the_formula_and_says_it_is_one() -> None:
    space, device = small_space(), load_device("pi4-ort")
    model = AnalyticEnergy(space, device, FixedLatency(space))
    arch = space.sample(np.random.default_rng(0))
    layers = space.layers(arch)
    macs = sum(layer_macs(s) for s in layers)
    moved = 4 * sum(layer_weight_params(s) + layer_io_elements(s) for s in layers)
    p = device.power
    want = p["idle_w"] * macs / 1e6 + (p["energy_per_mac_pj"] * macs + p["energy_per_byte_pj"] * moved) * 1e-9
    assert model.predict([arch])[0] == pytest.approx(want, rel=1e-12)
    info = model.describe()
    assert info["estimate"] is True and info["coefficients"] == p and info["unit"] == "mJ"


def test_device_without_power_model_is_refused() -> None:
    space = small_space()
    with pytest.raises(NasError, match="no power model"):
        AnalyticEnergy(space, load_device("local-cpu").model_copy(update={"power": {}}), FixedLatency(space))


def test_energy_counter_or_a_clear_message() -> None:
    try:
        counter = find_energy_counter()
    except NasError as exc:
        assert "no energy counter" in str(exc) and "powercap" in str(exc)
    else:
        a = counter.read_mj()
        sum(range(10**6))
        assert counter.delta(a, counter.read_mj()) >= 0


def test_layer_energy_import_makes_an_energy_lut(tmp_path: Path) -> None:
    space, device = small_space(), load_device("pi4-ort")
    specs = unique_layers(space)
    src = tmp_path / "energy.csv"
    with open(src, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "energy_mj"])
        w.writerows([s.key, 0.001 * (i + 1)] for i, s in enumerate(specs))
    lut = import_layer_energy(src, space, device, tmp_path / "energy_lut.csv")
    assert lut.metric == "energy" and lut.unit == "mJ"
    cost = LUTCost(LUT.load(tmp_path / "energy_lut.csv"), space, device=device)
    arch = space.sample(0)
    value = {s.key: 0.001 * (i + 1) for i, s in enumerate(specs)}
    assert cost.predict([arch])[0] == pytest.approx(sum(value[s.key] for s in space.layers(arch)))
    lines = src.read_text().splitlines()
    (tmp_path / "bad.csv").write_text("\n".join(lines[:3] + [lines[3].split(",")[0] + ",-2"] + lines[4:]) + "\n")
    with pytest.raises(NasError, match=r"bad\.csv:4: energy_mj = -2"):
        import_layer_energy(tmp_path / "bad.csv", space, device, tmp_path / "x.csv")
    (tmp_path / "short.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(NasError, match="1 block"):
        import_layer_energy(tmp_path / "short.csv", space, device, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_arch_energy_import_reads_nb201_strings(tmp_path: Path) -> None:
    space = load_space("nb201")
    src = tmp_path / "tx2.csv"
    src.write_text("arch,energy_mj\n"
                   "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|skip_connect~0|none~1|avg_pool_3x3~2|,24.5\n"
                   "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,12.0\n")
    assert import_arch_energy(src, space, tmp_path / "out.csv") == 2
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert [float(r["energy_mj"]) for r in rows] == [24.5, 12.0]
    assert space.parse_arch(rows[1]["arch"]) == space.from_string("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    src.write_text("arch,energy_mj\n|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|,1\n")
    with pytest.raises(NasError, match=r"tx2\.csv:2: .*unknown op 'nor_conv_5x5'"):
        import_arch_energy(src, space, tmp_path / "out2.csv")
