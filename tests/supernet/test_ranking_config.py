"""The ranking benchmark's task per space family (nas.supernet.bench.ranking_config)."""
from __future__ import annotations

import pytest

from nas.cli import main
from nas.errors import NasError
from nas.supernet.bench import RANKING_CONFIG, RANKING_FAMILY_TASKS, ranking_config
from nas.supernet.config import config_from_dict, load_config


def _flat(config) -> dict:
    """Resolved config as dotted keys, so a difference names the key."""
    out = {}
    for key, value in config.to_dict().items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def test_cnn_and_hybrid_spaces_keep_the_noisy_task():
    assert ranking_config() == RANKING_CONFIG
    assert ranking_config("tiny_mbconv") == RANKING_CONFIG
    hybrid = config_from_dict(ranking_config("tiny_hybrid"))
    assert hybrid.data.noise == RANKING_CONFIG["data"]["noise"] and hybrid.epochs == RANKING_CONFIG["epochs"]


def test_a_transformer_space_ranks_on_the_clean_digits_and_nothing_else_changes():
    vit = _flat(config_from_dict(ranking_config("tiny_vit")))
    noisy = _flat(config_from_dict({**RANKING_CONFIG, "space": "tiny_vit"}))
    assert {k for k in vit if vit[k] != noisy[k]} == {"data.noise"}
    assert vit["data.noise"] == RANKING_FAMILY_TASKS["transformer"]["config"]["data"]["noise"] == 0.0
    assert vit["data.source"] == "digits" and vit["epochs"] == RANKING_CONFIG["epochs"]
    assert vit["optimizer.name"] == "adamw"  # the family's training recipe still applies
    assert RANKING_CONFIG["data"]["noise"] == 1.0  # the shared default was not changed in place


def test_flags_override_the_family_task_and_a_bad_space_is_one_error(tmp_path, capsys):
    config = load_config(None, {"space": "tiny_vit", "epochs": 10}, base=ranking_config("tiny_vit"))
    assert config.epochs == 10 and config.data.noise == 0.0
    with pytest.raises(NasError, match="unknown space 'no_such_space'"):
        ranking_config("no_such_space")
    assert main(["bench", "supernet-ranking", "--space", "no_such_space", "--out", str(tmp_path / "r")]) == 2
    assert "unknown space" in capsys.readouterr().err and not (tmp_path / "r").exists()
