"""tools/train.py warns when train_cfg.max_iters and the learning-rate schedule end apart."""

from mmengine.config import Config

from tests.conftest import REPO, load_tool

DEMO = REPO / 'configs/demo/sam-vit-small_lora-qv-r4_1k_demo-binary-128x128.py'

tool = load_tool('tools/train.py', 'train_tool_schedule')


def test_a_shortened_run_names_the_option_that_shortens_the_schedule():
    cfg = Config.fromfile(DEMO)
    assert tool.check_schedule(cfg) == []  # the config's own schedule ends with the run
    cfg.merge_from_dict({'train_cfg.max_iters': 200})  # what --cfg-options train_cfg.max_iters=200 does
    [warning] = tool.check_schedule(cfg)
    assert 'param_scheduler[0] (PolyLR) ends at iteration 1000, after training stops' in warning
    assert '--cfg-options train_cfg.max_iters=200 param_scheduler.0.end=200' in warning
    cfg.merge_from_dict({'param_scheduler.0.end': 200})  # the option the warning gives
    assert tool.check_schedule(cfg) == []
    cfg.merge_from_dict({'train_cfg.max_iters': 300})
    assert 'ends at iteration 200, before training stops' in tool.check_schedule(cfg)[0]
