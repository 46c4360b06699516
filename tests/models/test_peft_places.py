"""The PEFT places of SAMViT and its blocks: visible, hook-free, and compatible with the earlier layout.

``tests/data/legacy_peft_layout.pth`` was written by the code in which Adapter, AdaptFormer,
SAM-Adapter and LST attached themselves with forward hooks (``blocks.N.attn.adapter``,
``blocks.N.mlp.adaptformer``, ``sam_adapter``, ``lst``): for each method, the perturbed
PEFT parameters of a tiny SAMViT built after ``torch.manual_seed(0)`` and its output on a
fixed 64x96 input.
"""

import re

import pytest
import torch

from mmseg_sam.models.backbones import SAMViT
from mmseg_sam.utils.checkpoint import upgrade_peft_key
from tests.conftest import REPO

LEGACY = torch.load(REPO / 'tests/data/legacy_peft_layout.pth', weights_only=True)


@pytest.mark.parametrize('name', sorted(LEGACY['methods']))
def test_checkpoints_of_the_earlier_layout_load_and_predict_the_same(name):
    saved = LEGACY['methods'][name]
    torch.manual_seed(0)  # the same frozen base weights as when the file was written
    model = SAMViT(arch=LEGACY['arch'], img_size=64, peft=saved['peft']).eval()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {upgrade_peft_key(k) for k in saved['state']} == trainable  # every old key has its place
    result = model.load_state_dict(saved['state'], strict=False)
    assert result.unexpected_keys == [] and not set(result.missing_keys) & trainable
    with torch.no_grad():
        out = model(LEGACY['input'])[-1]
    torch.testing.assert_close(out, saved['output'], rtol=0, atol=1e-5)


def test_print_shows_where_each_method_acts(tiny_arch):
    text = str(SAMViT(arch=tiny_arch, img_size=64, peft=dict(type='AdaptFormer', bottleneck=4)))
    block = text[text.index('(0): SAMBlock(') : text.index('(1): SAMBlock(')]
    assert re.search(r'\(mlp_parallel\): AdaptFormerLayer\(', block)  # the branch, inside its block
    assert '(attn_adapter): Identity()' in block and '(mlp_adapter): Identity()' in block
    text = str(SAMViT(arch=tiny_arch, img_size=64, peft=[dict(type='LST', side_dims=12, side_heads=3)]))
    assert '(side_network): LadderSideNetwork(' in text and '(input_prompts)' not in text


def test_no_method_registers_hooks_or_imports_another_method():
    peft = REPO / 'mmseg_sam/models/peft'
    methods = {p.stem for p in peft.glob('*.py')} - {
        '__init__',
        'base',
        'presets',
        'aux_losses',
        'bottleneck',
        'low_rank',
    }
    # <method>_<family>.py extends its method for a backbone family (vpt_sam2.py): it imports that method only
    extends = {m: m.split('_')[0] for m in methods if '_' in m and m.split('_')[0] in methods}
    methods -= set(extends)
    for path in peft.glob('*.py'):
        text = path.read_text()
        assert 'register_forward' not in text, path.name
        imported = set(re.findall(r'^from \.(\w+) import', text, flags=re.M))
        if path.stem in methods | set(extends):
            others = imported & methods - {extends.get(path.stem)}
            assert not others, f'{path.name} imports {sorted(others)}'
    assert extends == {'vpt_sam2': 'vpt'}
    classes = set(
        re.findall(
            r'^class (\w+)', '\n'.join((peft / f'{m}.py').read_text() for m in methods | set(extends)), re.M
        )
    )
    for path in (REPO / 'mmseg_sam/engine').rglob('*.py'):  # the engine knows the protocol, no method
        for names in re.findall(
            r'^from \.+models\.peft[\w.]* import \(?([^)]*?)\)?$', path.read_text(), re.M | re.S
        ):
            imported = {n.strip() for n in names.replace('\n', ',').split(',') if n.strip()}
            assert not imported & classes, f'{path.name} imports {sorted(imported & classes)}'


@pytest.mark.parametrize(
    ('peft', 'message'),
    [
        ([dict(type='Adapter', bottleneck=4), dict(type='Adapter', bottleneck=4)], r'blocks\.0\.attn_adapter is already adapted by AdapterLayer'),
        ([dict(type='AdaptFormer'), dict(type='AdaptFormer')], r'blocks\.0\.mlp_parallel is already adapted by AdaptFormerLayer'),
        ([dict(type='SAMAdapter', scale_factor=4)] * 2, r'input_prompts is already adapted by SAMAdapterPromptGenerator'),
    ],
)  # fmt: skip
def test_a_filled_place_is_refused_by_name(tiny_arch, peft, message):
    with pytest.raises(ValueError, match=message):
        SAMViT(arch=tiny_arch, img_size=64, peft=peft)
