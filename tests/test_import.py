"""``import mmseg_sam`` leaves the optional and heavy packages to the code that uses them."""

import subprocess
import sys

import pytest

from tests.conftest import REPO

# imported when used: sam2 (and hydra, omegaconf, iopath) when a SAM 2 model is built
# (mmseg_sam.models.sam2_modeling), pysodmetrics (and scikit-learn, scikit-image) when the
# saliency metric scores
LAZY = ('sam2', 'hydra', 'omegaconf', 'iopath', 'py_sod_metrics', 'sklearn', 'skimage')


@pytest.mark.slow
def test_import_mmseg_sam_leaves_the_lazy_packages_unimported():
    code = (
        'import sys, mmseg_sam, mmseg_sam.models.peft; '
        f"print(sorted({{n.split('.')[0] for n in sys.modules}} & set({LAZY!r})))"
    )
    out = subprocess.run(
        [sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == '[]'
