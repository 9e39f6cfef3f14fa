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
from nas.hardware.devices import Device
from nas.hardware.energy import AnalyticEnergy
from nas.hardware.lut import write_atomic
from nas.predictors.tables import ArchTable
from nas.space.arch import Arch
from nas.space.base import SearchSpace

ESTIMATE_COLUMN = "estimated_energy_mj"


class ColumnCost(CostModel):
    """A measured table column as a cost source: each arch's value, looked up.

    The one table-backed cost model of the project: energy estimates read latency
    through it, and search uses it for benchmark tables and user measurements (accuracy
    or cost). Archs the table lacks, and its missing cells, give NaN, so a caller can
    report them instead of guessing. Lookup is vectorised: each row of the code matrix
    is one fixed-width key, matched with searchsorted against the table's sorted keys.
    """

    def __init__(self, table: ArchTable, column: str, metric: str = "latency", unit: str = "ms") -> None:
        self.space, self.metric, self.unit, self.column = table.space, metric, unit, column
        self.path = ", ".join(table.sources)
        values = table.column(column).values
        keys = _row_keys(table.codes)
        order = np.argsort(keys)
        self._keys, self._values = keys[order], values[order]

    @classmethod
    def read(cls, space: SearchSpace, path: Path | str, column: str, metric: str = "latency",
             unit: str = "ms") -> ColumnCost:
        """The column of a table file (any format nas.predictors.tables reads)."""
        from nas.predictors.tables import read_table

        return cls(read_table(path, space), column, metric, unit)

    def predict(self, archs: Sequence[Arch] | np.ndarray) -> np.ndarray:
        keys = _row_keys(as_codes(self.space, archs))
        if not len(self._keys):
            return np.full(len(keys), np.nan)
        pos = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        return np.where(self._keys[pos] == keys, self._values[pos], np.nan)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "table": self.path, "column": self.column}


def _row_keys(codes: np.ndarray) -> np.ndarray:
    """One sortable fixed-width value per row of a code matrix."""
    codes = np.ascontiguousarray(np.atleast_2d(codes).astype(np.int64))
    return codes.view(np.dtype((np.void, codes.shape[1] * 8)))[:, 0]


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
