"""Every run config in examples/ loads, and every set it names is one qretrain knows
(a typo in a data spec would otherwise surface only minutes into a case study)."""

from pathlib import Path

import pytest

from qretrain.data import registry
from qretrain.pipeline.config import RunConfig

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_load_and_name_known_sets(path):
    config = RunConfig.load(path)
    assert config.data, path.name
    for role, ref in config.data.items():
        for part in ref.spec.split(registry.JOIN):
            is_path = "/" in part or Path(part).suffix in {".npz", ".csv", ".gz"}
            assert is_path or registry.is_named(part), f"{path.name}: data.{role} names {part!r}"


def test_a_misspelt_set_is_caught():
    assert registry.is_named("tuxpaint-stamps:scenes") and registry.is_named("gcompris-photos")
    assert registry.is_named("synthetic:64") and not registry.is_named("tuxpaint-stamp")
    assert not registry.is_named("natural:photos")
