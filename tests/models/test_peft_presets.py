"""The one table of PEFT presets: it covers the registry, and every grid column has its configs."""

from pathlib import Path

import pytest

from mmseg_sam.models.peft import PEFT_METHODS, BasePEFTMethod
from mmseg_sam.models.peft.presets import PRESETS, grid_presets, preset, uncovered_methods

REPO = Path(__file__).resolve().parents[2]


def test_every_registered_method_has_a_preset():
    assert uncovered_methods() == []


def test_a_new_method_without_a_preset_is_named(monkeypatch):
    class Unlisted(BasePEFTMethod):
        def inject(self, model):
            return {}

    monkeypatch.setitem(PEFT_METHODS._module_dict, 'Unlisted', Unlisted)
    assert uncovered_methods() == ['Unlisted']


def test_names_and_grid_columns_are_unique_and_have_configs():
    names = [item.name for item in PRESETS]
    assert len(set(names)) == len(names)
    assert preset('SSF').peft == dict(type='SSF')
    with pytest.raises(KeyError, match=r"no PEFT preset 'LoRA r 99'; presets: \['decoder-only'"):
        preset('LoRA r 99')
    grid = grid_presets()
    assert len(grid) == sum(item.grid is not None for item in PRESETS)
    for (folder, token), item in grid.items():
        files = sorted((REPO / 'configs' / folder).glob(f'sam-vit-h_{token}_*.py'))
        assert files, f'{item.name}: no configs/{folder}/sam-vit-h_{token}_*.py'
        assert (item.cobot_lr_mult is not None) == (item.peft is not None and item.peft['type'] == 'COBOT')
