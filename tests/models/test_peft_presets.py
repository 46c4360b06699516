"""The one table of PEFT presets: it covers the registry, and every grid column has its configs."""

import re

import pytest

from mmseg_sam.models.peft import PEFT_METHODS, BasePEFTMethod
from mmseg_sam.models.peft.presets import PRESETS, grid_presets, preset, uncovered_methods
from tests.conftest import REPO
from tests.peft_tiny import _TINY, tiny


def test_every_registered_method_has_a_preset():
    assert uncovered_methods() == []


def test_every_preset_has_tiny_settings_of_the_same_methods():
    assert list(_TINY) == [item.key for item in PRESETS]  # the tests' sizes, in table order
    for item in PRESETS:
        small = tiny(item)
        assert (small.get('peft') or {}).get('type') == (item.peft or {}).get('type'), item.key
        assert small.get('frozen', True) == item.backbone.get('frozen', True), item.key
    with pytest.raises(KeyError, match="'no-such' has no tiny settings in tests/peft_tiny.py"):
        tiny('no-such')


def test_a_new_method_without_a_preset_is_named(monkeypatch):
    class Unlisted(BasePEFTMethod):
        def inject(self, model):
            return {}

    monkeypatch.setitem(PEFT_METHODS._module_dict, 'Unlisted', Unlisted)
    assert uncovered_methods() == ['Unlisted']


def test_keys_names_and_grid_columns_are_unique_and_have_configs():
    keys = [item.key for item in PRESETS]
    names = [item.name for item in PRESETS]
    assert len(set(keys)) == len(keys) and len(set(names)) == len(names)
    assert all(re.fullmatch(r'[a-z0-9]+(-[a-z0-9]+)*', key) for key in keys), keys
    assert preset('ssf').peft == dict(type='SSF')
    with pytest.raises(KeyError, match=r"no PEFT preset 'LoRA r 99'; presets: \['decoder-only', 'bitfit'"):
        preset('LoRA r 99')
    # a display label is not a key: the error names the key to use
    with pytest.raises(
        KeyError, match=r"'LoRA \(r 4, q v\)' is the display label of PEFT preset 'lora-qv-r4'"
    ):
        preset('LoRA (r 4, q v)')
    grid = grid_presets()
    assert len(grid) == sum(item.grid is not None for item in PRESETS)
    for (folder, token), item in grid.items():
        assert token == item.key  # the grid's file names use the key
        files = sorted((REPO / 'configs' / folder).glob(f'sam-vit-h_{token}_*.py'))
        assert files, f'{item.key}: no configs/{folder}/sam-vit-h_{token}_*.py'
        assert (item.cobot_lr_mult is not None) == (item.peft is not None and item.peft['type'] == 'COBOT')
