import subprocess
import sys

import pytest
from mmseg.registry import MODELS

from mmseg_sam.models.backbones import SAM2_ARCHS, SAMViT
from tests.conftest import REPO, TINY_ARCH, load_tool


@pytest.mark.slow
def test_count_table_has_the_papers_figures():
    """docs/peft.md is this script's output: the figures it quotes must come out of it."""
    out = subprocess.run(
        [sys.executable, str(REPO / 'tools/analysis_tools/count_parameters.py')],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = _rows(out)
    assert (
        rows['Conv-LoRA (r 3, 8 experts)'][0] == '119,232'
        and rows['Conv-LoRA (r 3, 8 experts)'][2] == '514,560'
    )
    assert rows['LoRA (r 4, q v)'][0] == '147,456' and rows['COBOT + LoRA (r 4, q v)'][0] == '148,320'
    assert (
        rows['AdaptFormer (bottleneck 16)'][0] == '322,752'
        and rows['COBOT + AdaptFormer (16)'][0] == '324,048'
    )
    assert rows['binary (out_channels=1)'] == ['3,505,536']
    table = out.strip().split('\n\n')[0]
    assert table in (REPO / 'docs/peft.md').read_text()  # the doc holds the current table


def _rows(out: str) -> dict[str, list[str]]:
    """The tool's markdown rows: first cell -> the other cells."""
    return {
        line.split('|')[1].strip(): [c.strip() for c in line.split('|')[2:-1]]
        for line in out.splitlines()
        if line.startswith('| ') and '---' not in line
    }


def _load_tool():
    return load_tool('tools/analysis_tools/count_parameters.py', 'count_parameters_tool')


def _lora_qv_on_hiera(arch: dict, rank: int) -> int:
    """LoRA on q and v of every Hiera block: rank * (input width + output width) each, by hand."""
    widths = [arch['embed_dims'] * 2**i for i in range(4)]
    total, dim_in = 0, widths[0]
    for width, blocks in zip(widths, arch['stages'], strict=True):
        for _ in range(blocks):
            total += 2 * rank * (dim_in + width)  # q and v: A (r, C_in), B (C_out, r)
            dim_in = width  # the first block of a stage widens (query pooling)
    return total


def test_sam2_table_on_hiera_base_plus_is_in_the_docs(capsys):
    tool = _load_tool()
    assert tool.main(['--backbone', 'sam2']) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert rows['method'] == ['Hiera-B+ encoder']
    expected = _lora_qv_on_hiera(SAM2_ARCHS['base_plus'], rank=4)
    assert rows['LoRA (r 4, q v)'] == [f'{expected:,}'] == ['165,760']
    assert rows['decoder-only'] == ['0']
    assert rows['SAM-Adapter (scale 32)'] == rows['LST (side 192)'] == ['refused']
    assert '- LST (side 192): LST needs a backbone with a side_network place (SAMViT), got SAM2Hiera' in out
    assert rows['decode head (SAM2MaskDecoderHead, 256-dim)'] == ['trainable']
    doc = (REPO / 'docs/peft.md').read_text()
    section = doc.split('### SAM 2.1 Hiera base+', 1)[1]
    assert out.strip() in section  # the doc holds the current tables and refusals


@pytest.mark.slow
def test_sam2_sizes_and_bad_arch(capsys):
    tool = _load_tool()
    assert tool.main(['--backbone', 'sam2', '--arch', 'tiny']) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == '| method | Hiera-T encoder |'
    with pytest.raises(SystemExit):
        tool.main(['--backbone', 'sam2', '--arch', 'vit_b'])
    assert "--arch ['vit_b'] unknown for --backbone sam2; choose from ['tiny'" in capsys.readouterr().err


def test_a_new_family_is_a_column_without_changing_the_tool(capsys):
    """A registered family with its own name, sizes and labels: ``--backbone`` takes it as it is."""

    class ToyViT(SAMViT):
        family, family_title = 'toy', 'Toy ViT'
        arch_zoo = {'toy_s': dict(TINY_ARCH)}
        arch_labels, report_archs = {'toy_s': 'Toy-S'}, ('toy_s',)

    MODELS.register_module(name='ToyViT', module=ToyViT)
    try:
        tool = _load_tool()
        assert tool.main(['--backbone', 'toy']) == 0
    finally:
        MODELS.module_dict.pop('ToyViT')
    out = capsys.readouterr().out
    rows = _rows(out)
    assert rows['method'] == ['Toy-S encoder']
    assert rows['decode head (SAMMaskDecoderHead, 256-dim)'] == ['trainable']
    dims, depth, rank = TINY_ARCH['embed_dims'], TINY_ARCH['num_layers'], 4
    assert rows['LoRA (r 4, q v)'] == [f'{depth * 2 * rank * (dims + dims):,}']
