"""A third backbone family added in its own file (tests/models/third_family.py) works everywhere unchanged.

Registered for the length of each test, ``PlainViT`` passes the conformance checks with
every PEFT preset (SAM-Adapter and LST refused with its declared reasons), trains and
predicts inside ``SAMEncoderDecoder`` with SAM's decoder head, and the tools that list
families take it: ``count_parameters.py --backbone plain``, ``benchmark.py``'s rows.
"""

import pytest
import torch
from mmseg.registry import MODELS

from mmseg_sam.models.backbones.base import registered_families
from mmseg_sam.models.peft.base import refused_places
from mmseg_sam.models.peft.presets import PRESETS
from tests.conftest import TINY_IMG, load_tool, tiny_batch, tiny_segmentor_cfg
from tests.models.families import Family
from tests.models.test_backbone_conformance import check_conformance
from tests.models.third_family import PlainViT
from tests.peft_tiny import tiny

FIXTURE = Family(lambda **kw: PlainViT(**kw), ((32, 32), (16, 48)))


@pytest.fixture
def plain():
    """PlainViT in the model registry, as its module's import would put it there."""
    MODELS.register_module(name='PlainViT', module=PlainViT)
    try:
        yield PlainViT
    finally:
        MODELS.module_dict.pop('PlainViT')


@pytest.mark.parametrize('item', PRESETS, ids=lambda item: item.key)
def test_the_third_family_passes_the_conformance_checks(plain, item):
    check_conformance(FIXTURE, plain, tiny(item))


def test_it_refuses_exactly_the_methods_whose_places_it_lacks(plain):
    refused = {item.key for item in PRESETS if refused_places(plain, item.peft)}
    assert refused == {'sam-adapter', 'lst-d192'}
    assert registered_families()['plain'] is plain


def test_it_trains_and_predicts_in_the_segmentor(plain):
    cfg = tiny_segmentor_cfg()
    cfg['backbone'] = dict(type='PlainViT', peft=dict(type='LoRA', rank=2, targets=('q', 'v')))
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    inputs, samples = tiny_batch()
    losses = model.loss(inputs, samples)
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(loss)
    loss.backward()
    lora = [p for n, p in model.backbone.named_parameters() if 'lora_' in n]
    assert lora and all(p.grad is not None for p in lora)
    assert all(p.grad is None for n, p in model.backbone.named_parameters() if 'lora_' not in n)
    model.eval()
    with torch.no_grad():
        [result, _] = model.predict(inputs, samples)
    assert result.pred_sem_seg.data.shape == (1, TINY_IMG, TINY_IMG)


def test_the_tools_list_it(plain, capsys):
    counter = load_tool('tools/analysis_tools/count_parameters.py', 'count_parameters_tool')
    assert counter.main(['--backbone', 'plain']) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == '| method | Plain-T encoder |'
    lora = PlainViT(peft=dict(type='LoRA', rank=4, targets=('q', 'v'))).peft_report.total
    assert f'| LoRA (r 4, q v) | {lora:,} |' in out
    assert (
        '- LST (side 192): LST needs a backbone with a side_network place (SAMViT), got PlainViT: its neck'
        in out
    )

    bm = load_tool('tools/analysis_tools/benchmark.py', 'benchmark_tool')
    rows = {row.key: row for row in bm.all_rows()}  # ROWS as the tool builds it with the family registered
    assert rows['plain-lora-qv-r4'].name == 'Plain ViT: LoRA (r 4, q v)'
    parser = bm.build_parser()
    archs, options = bm.family_settings(
        parser, parser.parse_args(['--family-options', 'plain', 'with_cp=True'])
    )
    model = bm.build_row(rows['plain-lora-qv-r4'], dict(archs=archs, options=options, img_size=TINY_IMG))
    assert isinstance(model, PlainViT) and model.with_cp is True and model.peft_report.total == lora
