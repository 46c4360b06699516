"""One rule for the options every method shares: blocks, targets, ranks and widths."""

import pytest

from mmseg_sam.models.backbones import SAMViT
from tests.conftest import TINY_IMG

# method -> its config without blocks (every method that takes ``blocks``)
WITH_BLOCKS = {
    'LoRA': dict(type='LoRA'),
    'ConvLoRA': dict(type='ConvLoRA', num_experts=2),
    'Adapter': dict(type='Adapter', bottleneck=4),
    'AdaptFormer': dict(type='AdaptFormer', bottleneck=4),
    'BitFit': dict(type='BitFit'),
    'SSF': dict(type='SSF'),
    'VPT': dict(type='VPT', num_tokens=2),
    'SAMAdapter': dict(type='SAMAdapter', scale_factor=4),
}
BAD_BLOCKS = [True, [0, 0], 'all', [-1], [], [1.0], 3]


@pytest.mark.parametrize('blocks', BAD_BLOCKS, ids=repr)
@pytest.mark.parametrize('method', list(WITH_BLOCKS))
def test_one_rule_for_blocks(tiny_arch, method, blocks):
    with pytest.raises(
        ValueError, match=rf'^{method} blocks must be None \(every block\) or a non-empty list of '
    ):
        SAMViT(arch=tiny_arch, img_size=TINY_IMG, peft=dict(WITH_BLOCKS[method], blocks=blocks))


@pytest.mark.parametrize('method', ['LoRA', 'ConvLoRA', 'Adapter', 'BitFit', 'SSF'])
def test_one_rule_for_targets(tiny_arch, method):
    cfg = WITH_BLOCKS[method]
    with pytest.raises(ValueError, match=rf'^{method} targets must name at least one of \['):
        SAMViT(arch=tiny_arch, img_size=TINY_IMG, peft=dict(cfg, targets=()))
    target = {'LoRA': 'q', 'ConvLoRA': 'qkv', 'Adapter': 'mlp'}.get(method, 'qkv')
    with pytest.raises(ValueError, match=rf"^{method} targets name \['{target}'\] more than once"):
        SAMViT(arch=tiny_arch, img_size=TINY_IMG, peft=dict(cfg, targets=(target, target)))


@pytest.mark.parametrize(
    ('cfg', 'name'),
    [(dict(type='LoRA'), 'rank'), (dict(type='ConvLoRA'), 'rank'), (dict(type='Adapter'), 'bottleneck'),
     (dict(type='AdaptFormer'), 'bottleneck')],
)  # fmt: skip
@pytest.mark.parametrize('value', [0, -2, True, 2.5])
def test_one_rule_for_ranks_and_widths(tiny_arch, cfg, name, value):
    with pytest.raises(ValueError, match=rf'^{cfg["type"]} {name} must be a positive int, got {value!r}$'):
        SAMViT(arch=tiny_arch, img_size=TINY_IMG, peft=dict(cfg, **{name: value}))
