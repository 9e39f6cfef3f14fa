"""Few-shot transfer to a new device: pretrain on source devices, adapt with K measurements.

Pretraining fits one predictor per source column (a device's latency or energy) on its
own rows. Their predictions are a shared representation of an arch: how it runs on
each known device. Adapting to a target with K measured archs fits two heads and
averages them in log space:

    shared  ridge over the source predictions (and their logs), with the coarse
            physical features as a more strongly penalised correction: the target as
            a mix of known devices, plus whatever none of them shows
    direct  the group ridge of nas.predictors.models.linear on the K rows alone, whose
            coarse-before-fine penalties already generalise from a handful of rows

Each head's penalties are chosen by leave-one-out over the K rows. The K archs come
from the reference design (nas.predictors.reference), never from the target's values,
and the predictor file lists them. Two more heads can be averaged in (`heads=`): `mix`
(the target as a power-law mix of the sources alone) and `simplex` (the same with
non-negative weights summing to one: a weighted geometric mean of known devices). No
variant won everywhere under leave-one-device-out on the public tables
(docs/benchmarks.md, issue 17), so `hwnas predictor transfer` chooses one per run on its
sources alone (choose_heads); shared + direct is the fixed default of the API and of
`fit --model transfer`. `shipped_sources` makes the space's shipped predictors the
sources of `hwnas predictor fit --model transfer`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nas.errors import NasError
from nas.predictors.features import Featurizer, get_featurizer
from nas.predictors.models.linear import GroupRidge
from nas.predictors.models.transfer import TransferModel
from nas.predictors.intervals import model_residuals
from nas.predictors.predictor import Predictor, base_meta, calibration_meta, split_rows
from nas.predictors.reference import coarse_features, design_order, load_reference
from nas.predictors.tables import ArchTable

N_PRETRAIN = 2000
DEFAULT_HEADS = ("shared", "direct")


def pretrain(table: ArchTable, featurizer: Featurizer, column: str, n_pretrain: int = N_PRETRAIN,
             seed: int = 0) -> GroupRidge:
    """A source model: the group ridge on up to n_pretrain random rows of one column."""
    rows, y, _ = table.rows(column, positive=True)
    train, _ = split_rows(len(rows), min(n_pretrain, len(rows)), seed)
    return GroupRidge(groups=featurizer.groups).fit(featurizer.transform(table.subset(rows[train])), y[train])


def shipped_sources(space, device: str | None = None) -> tuple[list[str], list]:
    """(names, models) of every latency/energy predictor of the space over the predictor
    layers (nas.catalog), except the given device's own: the sources a fit on a new
    device's measurements transfers from. Files made with other features are skipped."""
    from nas import catalog

    names, models = [], []
    for name, path in catalog.predictor_files(space.name).items():
        folder, _, stem = name.partition("/")
        if not stem.endswith(("_latency", "_energy")) or (device and folder == device):
            continue
        try:
            predictor = Predictor.load(path, space)
        except NasError:
            continue
        if predictor.meta.get("model") in ("ridge", "lut_residual", "boosted", "gbt", "forest", "mlp", "ensemble"):
            names.append(name)
            models.append(predictor.model)
    return names, models


def choose_heads(table: ArchTable, sources: Sequence[str], models: Sequence, k: int, seed: int = 0,
                 n_pretrain: int = N_PRETRAIN) -> tuple[tuple[str, ...], dict[str, float]]:
    """The transfer variant with the best mean Spearman when each source device in turn
    plays the new device (adapted on K design rows of its column, from the other source
    devices): the nested choice of `hwnas bench predictors`, made on the sources alone.
    With fewer than three source devices there is nothing to choose on: shared + direct."""
    from nas.predictors.loo import TRANSFER_VARIANTS, Protocol, World, device_groups

    if len(set(device_groups(sources).values())) < 3:
        return DEFAULT_HEADS, {}
    try:
        world = World(table, list(sources), n_pretrain, pretrained=dict(zip(sources, models)))
    except NasError:  # a source column too short to be left out and tested on
        return DEFAULT_HEADS, {}
    pick, means = Protocol(world, (seed,)).choose(list(TRANSFER_VARIANTS), "", "transfer", k)
    return TRANSFER_VARIANTS[pick], {"variant": pick, "mean_spearman": means}


def adaptation_rows(table: ArchTable, featurizer: Featurizer, target: str, k: int, seed: int = 0,
                    reference: Sequence | None = None) -> tuple[np.ndarray, str]:
    """Positions (in the table) of the K archs to adapt on, and how they were chosen: the
    first K reference archs that the table has a value for, else the reference design
    run over the table's rows that have one."""
    rows, _, _ = table.target(target)
    if not 2 <= k <= len(rows):
        raise NasError(f"--k {k} must be at least 2 and at most the {len(rows)} rows with {target}")
    if reference:
        where = {a: i for i, a in enumerate(table.arch_ids)}
        have = set(rows.tolist())
        picked = [where[a.arch_id] for a in reference if a.arch_id in where and where[a.arch_id] in have]
        if len(picked) >= k:
            return np.array(picked[:k]), f"first {k} archs of the reference set present in the table"
    order = design_order(coarse_features(featurizer, table.subset(rows)), k, seed)
    return rows[order], f"reference design over the {len(rows)} table rows with {target} (seed {seed})"


def transfer_predictor(table: ArchTable, sources: Sequence[str], target: str, k: int, seed: int = 0,
                       reference: Sequence | None = None, n_pretrain: int = N_PRETRAIN,
                       use_shipped_reference: bool = True, pretrained: Sequence | None = None,
                       device: str | None = None, heads: Sequence[str] | str = DEFAULT_HEADS) -> Predictor:
    """Pretrain on the source columns (or take `pretrained` source models, one per
    column), adapt to K rows of the target column. The reference archs are `reference`,
    else the space's shipped set unless use_shipped_reference is False. heads="auto"
    picks the heads by choose_heads."""
    if target in sources:
        raise NasError(f"the target column {target} is also a source; leave it out of --source")
    featurizer = get_featurizer(table.space)
    if reference is None and use_shipped_reference:
        reference = load_reference(table.space)
    models = list(pretrained) if pretrained is not None else \
        [pretrain(table, featurizer, c, n_pretrain, seed) for c in sources]
    choice = None
    if heads == "auto":
        heads, choice = choose_heads(table, sources, models, k, seed, n_pretrain)
    adapt, how = adaptation_rows(table, featurizer, target, k, seed, reference)
    y = table.column(target).values[adapt]
    model = TransferModel(models, featurizer.groups, heads).fit(featurizer.transform(table.subset(adapt)), y)
    meta = base_meta(featurizer, target, None, None, device, table)
    meta["model"] = "transfer"
    meta["calibration"] = calibration_meta(model_residuals(model), model)
    ids = [table.arch_ids[i] for i in adapt]
    meta["training"] = {"n_train": len(adapt), "seed": seed, "arch_ids": ids}
    meta["transfer"] = {"sources": list(sources), "k": k, "n_pretrain": n_pretrain, "adapted_on": how,
                        "adapt_arch_ids": ids, "heads": list(heads), **({"heads_choice": choice} if choice else {})}
    return Predictor(table.space, featurizer, model, meta)
