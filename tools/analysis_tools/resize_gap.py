"""How far mmcv's Resize (OpenCV bilinear) is from segment_anything's ResizeLongestSide (PIL bilinear).

Prints, per image, the mean, 99th percentile and largest absolute difference in grey levels
between the two resizes at the ratio of a 2400-pixel photograph scaled to SAM's 1024
(``--ratio``). The images are scikit-image's bundled photographs, or your own files.
"""

import argparse

import cv2
import numpy as np
from skimage import data, io

from mmseg_sam.datasets.transforms import longest_side_shape, pil_bilinear


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('images', nargs='*', help='image files (default: scikit-image photographs)')
    parser.add_argument('--ratio', type=float, default=1024 / 2400, help='output / input long side')
    args = parser.parse_args()
    images = {p: io.imread(p) for p in args.images} or {
        name: getattr(data, name)() for name in ('astronaut', 'coffee', 'chelsea', 'rocket')
    }
    print('| image | size | resized | mean | p99 | max |\n| --- | --- | --- | ---: | ---: | ---: |')
    for name, img in images.items():
        img = np.ascontiguousarray(img[..., :3]) if img.ndim == 3 else img
        h, w = img.shape[:2]
        nh, nw = longest_side_shape(h, w, round(max(h, w) * args.ratio))
        diff = np.abs(
            pil_bilinear(img, nh, nw).astype(int) - cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        )
        print(
            f'| {name} | {h}x{w} | {nh}x{nw} | {diff.mean():.2f} | {np.percentile(diff, 99):.0f} | {diff.max()} |'
        )


if __name__ == '__main__':
    main()
