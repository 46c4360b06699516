"""tools/analysis_tools/benchmark_heads.py: every head builds from its model base with C classes and
takes a training step (tiny SAM; the tool itself measures ViT-B)."""

import pytest

from tests.conftest import TINY_ARCH, load_tool

benchmark_heads = load_tool('tools/analysis_tools/benchmark_heads.py', 'benchmark_heads')


@pytest.mark.parametrize('head', sorted(benchmark_heads.HEADS))
@pytest.mark.parametrize('part', ['head', 'full'])
def test_each_head_steps_with_many_classes(head, part):
    arch = dict(TINY_ARCH, num_layers=12, global_attn_indexes=(2, 5, 8, 11), out_channels=256)
    opts = dict(head=head, classes=19, img_size=64, part=part, device='cpu', warmup=0, repeat=1, arch=arch)
    result = benchmark_heads.measure(opts)
    assert result['trainable'] > 0 and len(result['times']) == 1 and result['peak_mib'] >= 0


def test_more_classes_more_parameters_for_tokens_not_for_queries():
    """One token per class grows a token and an MLP per class; mask classification only its classifier."""
    counts = {}
    for head in ('tokens', 'maskcls'):
        for classes in (2, 59):
            cfg = benchmark_heads.model_cfg(head, classes, 64, arch=dict(TINY_ARCH))
            counts[head, classes] = cfg['decode_head']
    assert counts['tokens', 59]['out_channels'] == 59
    assert counts['maskcls', 59]['num_queries'] == counts['maskcls', 2]['num_queries'] == 100
