"""Energy tables where no energy was measured: the analytic estimate per arch.

Measured energy (HW-NAS-Bench's edgegpu_energy, or `hwnas energy` on a machine with a
counter) trains an energy predictor like any column. For a device with only latency
measurements, the device profile's power model (nas.hardware.energy.AnalyticEnergy:
idle power x latency + energy per MAC and per byte moved) turns each measured latency
into an energy estimate; the table of estimates, labelled as such, then trains the
energy predictor that search uses, so every device answers the same interface.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.costs import CostModel, as_codes
from nas.errors import NasError
from nas.hardware.devices import Device
from nas.hardware.energy import AnalyticEnergy
from nas.hardware.lut import write_atomic
from nas.predictors.tables import ArchTable
from nas.space.arch import Arch

ESTIMATE_COLUMN = "estimated_energy_mj"


class ColumnCost(CostModel):
    """A measured table column as a cost source: each arch's value, looked up."""

    def __init__(self, table: ArchTable, column: str, metric: str = "latency", unit: str = "ms") -> None:
        self.space, self.metric, self.unit, self.column = table.space, metric, unit, column
        rows, values, _ = table.rows(column, positive=True)
        self._values = {table.codes[i].tobytes(): v for i, v in zip(rows, values)}

    def predict(self, archs: Sequence[Arch] | np.ndarray) -> np.ndarray:
        codes = as_codes(self.space, archs)
        try:
            return np.array([self._values[c.tobytes()] for c in codes], dtype=np.float64)
        except KeyError:
            raise NasError(f"an arch has no {self.column} value in the table") from None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "column": self.column}


def energy_table(table: ArchTable, latency_column: str, device: Device, out: Path) -> int:
    """Write arch_id, estimated_energy_mj, arch for every row with a latency, plus a JSON
    sidecar with the estimate's formula and coefficients; returns the row count."""
    latency = ColumnCost(table, latency_column)
    estimate = AnalyticEnergy(table.space, device, latency)
    rows, _, _ = table.rows(latency_column, positive=True)
    values = estimate.predict(table.subset(rows))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["arch_id", ESTIMATE_COLUMN, "arch"])
    for arch, value in zip(table.archs(rows), values):
        writer.writerow([arch.arch_id, repr(float(value)), arch.to_json()])
    out = Path(out)
    write_atomic(out, buf.getvalue())
    sidecar = {**estimate.describe(), "tables": table.sources, "latency_column": latency_column, "rows": len(rows)}
    write_atomic(out.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")
    return len(rows)
