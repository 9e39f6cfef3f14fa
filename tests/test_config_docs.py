"""The README's config tables against the models they document, so the two cannot drift:
the search config's keys and defaults, the controllers and each one's settings and
defaults (from the registry), and the training config example (it must validate)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from nas.search.config import SearchConfig
from nas.search.controllers import controller_class, controller_names
from nas.search.controllers.base import ControllerSettings
from nas.supernet.config import TrainConfig, config_from_dict

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
CODE = re.compile(r"`([^`]*)`")


def section(heading: str) -> str:
    """The README text from `heading` to the next heading of the same or a higher level."""
    level = heading.split()[0]
    start = README.index(f"\n{heading}\n")
    rest = README[start + len(heading) + 2:]
    end = re.search(rf"^#{{1,{len(level)}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def tables(text: str) -> list[list[list[str]]]:
    """Every markdown table in `text`: rows of cells (header and rule dropped; '\\|' is a '|' in a cell)."""
    found, rows = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            rows.append([c.strip().replace("\0", "|") for c in line.replace("\\|", "\0").strip("|").split("|")])
        elif rows:
            found.append(rows[2:])
            rows = []
    return found


def documented(cell: str) -> str:
    """A default cell's value: its first `code` span, else the text."""
    match = CODE.search(cell)
    return match.group(1) if match else cell


def test_the_search_config_table_lists_the_models_keys_and_defaults() -> None:
    rows = tables(section("### Config schema"))[0]
    assert [documented(r[0]) for r in rows] == SearchConfig.known_keys()
    for key, _, default, _ in rows:
        field = SearchConfig.model_fields[documented(key)]
        if field.is_required():
            assert default == "required", key
            continue
        value = field.get_default(call_default_factory=True)
        if value is None:  # the cell says what a missing value means
            continue
        expected = value.name if isinstance(value, ControllerSettings) else \
            {list: "[]", dict: "{}"}.get(type(value)) if not value and isinstance(value, (list, dict)) else str(value)
        assert documented(default) == expected, key


def test_the_controller_tables_name_every_registered_controller_and_its_settings() -> None:
    overview, settings = tables(section("### Controllers"))[:2]
    assert sorted(n for r in overview for n in CODE.findall(r[0])) == sorted(controller_names())
    rows = {documented(r[0]): r[1] for r in settings}
    assert sorted(rows) == sorted(controller_names())
    for name, cell in rows.items():
        model = controller_class(name).Settings
        pairs = [span.split(": ", 1) for span in CODE.findall(cell) if ": " in span]
        assert [k for k, _ in pairs] == [k for k in model.known_keys() if k != "name"], name
        defaults = model().model_dump(mode="json")
        for key, value in pairs:
            assert yaml.safe_load(value) == defaults[key], f"{name}.{key}"


def test_the_training_config_example_is_valid_and_uses_the_models_keys() -> None:
    text = section("### Commands")
    block = text[text.index("A config file (every key optional) sets the rest:"):]
    example = yaml.safe_load(block.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert set(example) <= set(TrainConfig.known_keys())
    config = config_from_dict(example, "README")
    for key, value in example.items():
        if isinstance(value, dict):  # every documented sub-setting is the value the config ends up with
            assert {k: getattr(getattr(config, key), k) for k in value} == pytest.approx(value), key
