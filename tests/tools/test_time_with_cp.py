"""tools/analysis_tools/time_with_cp.py: ratios per with_cp level and the step's operator profile."""

import pytest

from tests.conftest import load_tool

tool = load_tool('tools/analysis_tools/time_with_cp.py', 'time_with_cp_tool')


@pytest.mark.slow
def test_ratios_and_profile(capsys):
    """ViT-B at 64x64 (a 4x4 token grid): one timed round, then the costliest operators of a step."""
    argv = ['--arch', 'vit_b', '--img-size', '64', '--warmup', '0', '--repeat', '1', '--profile', '5']
    assert tool.main(argv) == 0
    out = capsys.readouterr().out
    assert '| step with_cp=False / frozen forward |' in out
    assert "| step with_cp='selective' / step with_cp=False |" in out
    profile = out.split('the 5 operators with the most self CPU time:')[1]
    assert 'Self CPU' in profile and 'aten::' in profile


def test_bad_profile_count(capsys):
    with pytest.raises(SystemExit):
        tool.main(['--profile', '-1'])
    assert '--profile must be >= 0 (operators to list), got -1' in capsys.readouterr().err


def test_bad_levels(capsys):
    with pytest.raises(SystemExit):
        tool.main(['--levels', 'False', 'partial'])
    assert '--levels must be among False, selective, True; got partial' in capsys.readouterr().err


def test_profile_without_the_level_timed(capsys):
    """``--levels selective`` times that level alone; the profile is still of a step without
    recomputation."""
    argv = ['--img-size', '64', '--warmup', '0', '--repeat', '1', '--levels', 'selective', '--profile', '3']
    assert tool.main(argv) == 0
    out = capsys.readouterr().out
    ratios = [line for line in out.splitlines() if line.startswith('| step with_cp=')]
    assert ratios == [ratios[0]] and ratios[0].startswith("| step with_cp='selective' / frozen forward |")
    timed = [
        line.split('|')[1].strip() for line in out.split('| timed |')[1].split('\n\n')[0].splitlines()[2:]
    ]
    assert timed == ['forward', "'selective'"]
    assert 'aten::' in out.split('the 3 operators with the most self CPU time:')[1]
