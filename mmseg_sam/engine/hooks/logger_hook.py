"""mmengine's LoggerHook with the test metrics' JSON written by one process."""

import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import dump
from mmengine.hooks import LoggerHook
from mmseg.registry import HOOKS

__all__ = ['MainProcessLoggerHook']


@HOOKS.register_module()
class MainProcessLoggerHook(LoggerHook):
    """``LoggerHook`` whose end-of-test JSON (``<timestamp>/<timestamp>.json``) only rank 0 writes.

    mmengine 0.10's ``LoggerHook.after_test_epoch`` dumps the test metrics on every rank
    to the same file. Under ``dist_test.sh`` the ranks' writes overlap, and the file can
    end as one rank's line with the tail of another's (invalid JSON). Here every rank
    still logs the metrics line; only the main process writes the file. Everything else
    is ``LoggerHook``'s, with the same arguments.
    """

    def after_test_epoch(self, runner, metrics: dict[str, float] | None = None) -> None:  # noqa: ANN001
        tag, log_str = runner.log_processor.get_log_after_epoch(
            runner, len(runner.test_dataloader), 'test', with_non_scalar=True
        )
        runner.logger.info(log_str)
        if is_main_process():
            dump(self._process_tags(tag), osp.join(runner.log_dir, self.json_log_path))
