import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_count_table_has_the_papers_figures():
    """docs/peft.md is this script's output: the figures it quotes must come out of it."""
    out = subprocess.run(
        [sys.executable, str(REPO / 'tools/analysis_tools/count_parameters.py')],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = {
        line.split('|')[1].strip(): [c.strip() for c in line.split('|')[2:-1]]
        for line in out.splitlines()
        if line.startswith('| ') and '---' not in line
    }
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
