"""tools/analysis_tools/plot_curves.py on the logs of a real (short) training run."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import load_tool
from tests.tools.test_infer import trained_run  # noqa: F401  (session fixture: one shared training run)

tool = load_tool('tools/analysis_tools/plot_curves.py', 'plot_curves_tool')


def _logged(scalars: Path) -> list[dict]:
    return [json.loads(line) for line in scalars.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_curves_of_a_training_run(trained_run, tmp_path):  # noqa: F811
    [scalars] = trained_run.work.glob('*/vis_data/scalars.json')
    out = tmp_path / 'curves.png'
    assert tool.main([str(trained_run.work), '--out', str(out)]) == 0
    with Image.open(out) as png:
        png.verify()
    image = np.array(Image.open(out).convert('RGB'))
    assert image.shape == (840, 800, 3)  # 8 x (3 panels x 2.6 + 0.6) inches at 100 dpi
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # lines, text and axes, not a blank canvas

    records = tool.read_scalars(scalars)
    panels = tool.select_panels(records)
    assert panels == {
        'loss': ['decode.loss_ce', 'loss', 'loss_moe'],  # Conv-LoRA's balancing loss included
        'lr': ['lr'],
        'val': ['aAcc', 'mAcc', 'mDice', 'mIoU'],
    }
    fig = tool.plot_curves(records, panels)
    lines = {(ax.get_title(loc='left'), line.get_label()): line for ax in fig.axes for line in ax.get_lines()}
    logged = _logged(scalars)
    train = [r for r in logged if 'iter' in r]
    val = [r for r in logged if 'iter' not in r]
    assert [r['iter'] for r in train] == [1, 2, 3, 4] and [r['step'] for r in val] == [2, 4]
    moe = lines[('losses', 'loss_moe')]
    np.testing.assert_allclose(moe.get_xdata(), [r['iter'] for r in train])
    np.testing.assert_allclose(moe.get_ydata(), [r['loss_moe'] for r in train])
    miou = lines[('validation', 'mIoU')]
    np.testing.assert_allclose(miou.get_xdata(), [2, 4])
    np.testing.assert_allclose(miou.get_ydata(), [r['mIoU'] for r in val])
    np.testing.assert_allclose(lines[('learning rate', 'lr')].get_ydata(), [r['lr'] for r in train])


@pytest.mark.slow
def test_newest_run_unless_one_is_named(trained_run, tmp_path, capsys):  # noqa: F811
    [scalars] = trained_run.work.glob('*/vis_data/scalars.json')
    work = tmp_path / 'work'
    for run, records in (('20240101_000000', _logged(scalars)), ('20240102_000000', _logged(scalars)[:2])):
        (work / run / 'vis_data').mkdir(parents=True)
        text = '\n'.join(json.dumps(r) for r in records)
        (work / run / 'vis_data/scalars.json').write_text(text)
    assert tool.main([str(work), '--keys', 'loss']) == 0  # newest: 2 iterations, no validation yet
    assert (work / '20240102_000000/curves.png').is_file()
    assert "loss: ['loss'] ->" in capsys.readouterr().out
    assert tool.main([str(work), '--run', '20240101_000000', '--keys', 'grad_norm', 'm*U']) == 0
    assert "val: ['mIoU'], other: ['grad_norm'] ->" in capsys.readouterr().out
    assert tool.main([str(work / '20240101_000000')]) == 0  # a run folder works too
    assert tool.main([str(work), '--run', '20230101_000000']) == 1
    assert "no run '20230101_000000' with vis_data/scalars.json" in capsys.readouterr().err


@pytest.mark.slow
def test_bad_input_is_reported(trained_run, tmp_path, capsys):  # noqa: F811
    (tmp_path / 'empty').mkdir()
    assert tool.main([str(tmp_path / 'empty')]) == 1
    err = capsys.readouterr().err
    assert 'no <run>/vis_data/scalars.json under' in err and 'LocalVisBackend' in err
    assert not list(tmp_path.rglob('*.png'))

    assert tool.main([str(tmp_path / 'missing')]) == 1
    assert 'work dir not found' in capsys.readouterr().err

    [scalars] = trained_run.work.glob('*/vis_data/scalars.json')
    bad = tmp_path / 'bad/20240101_000000/vis_data/scalars.json'
    bad.parent.mkdir(parents=True)
    shutil.copy(scalars, bad)
    with bad.open('a') as f:
        f.write('\n{"loss": 0.5, "iter"\n')
    lineno = bad.read_text().splitlines().index('{"loss": 0.5, "iter"') + 1
    assert tool.main([str(tmp_path / 'bad')]) == 1
    assert f'{bad}:{lineno}: not JSON' in capsys.readouterr().err

    assert tool.main([str(trained_run.work), '--keys', 'loss_dice']) == 1
    assert "--keys 'loss_dice' matches no logged key; logged: ['aAcc', 'base_lr'" in capsys.readouterr().err
    with pytest.raises(ValueError, match='nothing to plot'):
        tool.select_panels([{'iter': 1, 'step': 1, 'time': 0.5}])
