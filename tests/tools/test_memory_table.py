"""tools/analysis_tools/memory_table.py: one row per method and with_cp level, each level applied."""

import json
import sys

import torch

from tests.conftest import REPO, load_tool, tiny_segmentor_cfg
from tests.peft_tiny import tiny

sys.path.insert(0, str(REPO / 'tools/analysis_tools'))  # the tool imports estimate_memory as a sibling
tool = load_tool('tools/analysis_tools/memory_table.py', 'memory_table_tool')

IMG = 128


def tiny_meta(config, arch, method, img_size):
    """The tiny SAM segmentor with the preset's tiny-test PEFT, on the meta device (for speed)."""

    with torch.device('meta'):
        return tool.build_model(tiny_segmentor_cfg(img_size=img_size, **tiny(method)))


def test_rows_per_level(tmp_path, capsys, monkeypatch):
    """Each with_cp level is applied to the blocks: the three levels predict less and less (tiny SAM,
    128x128, an 8x8 token grid)."""
    monkeypatch.setattr(tool, 'build_meta', tiny_meta)
    monkeypatch.setattr(tool, 'AMPS', ('none',))  # fp32 only: half the estimates
    out_json = tmp_path / 'table.json'
    argv = [
        '--archs',
        'vit_b',
        '--methods',
        'lora-qv-r4',
        '--img-size',
        str(IMG),
        '--out-json',
        str(out_json),
    ]
    assert tool.main(argv) == 0
    text = capsys.readouterr().out
    assert f'#### ViT-B, {IMG}x{IMG}: predicted peak GiB' in text
    rows = [line for line in text.splitlines() if line.startswith('| LoRA (r 4, q v) |')]
    assert [row.split('|')[2].strip() for row in rows] == ['False', "'selective'", 'True']
    results = json.loads(out_json.read_text())
    peaks = {r['with_cp']: r['peaks']['none'] for r in results}
    assert set(peaks) == {False, 'selective', True}
    for batch in ('1', '2', '4', '8'):
        assert peaks[False][batch] > peaks['selective'][batch] > peaks[True][batch], batch
    # batches 4 and 8 extrapolate linearly from 1 and 2
    assert peaks[True]['8'] - peaks[True]['4'] == 4 * (peaks[True]['2'] - peaks[True]['1'])
