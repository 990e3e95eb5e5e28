"""Does a converted EfficientNet-Lite still see garments? ImageNet top-5 on garment photos.

`python -m pipeline.tools.imagenet_check --images DIR [--backbone efficientnet_lite0] [--json OUT]`
classifies every `--every`-th .jpg under DIR (recursively) at 224 px with the network's own
classifier and reports the share whose top 5 holds a garment class (GARMENT_CLASSES), plus the
same share under two known-wrong conversions (kernels transposed, 0..255 input) so the gap is
visible. docs/pretrained.md quotes its JSON for the shared real photos.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List

import numpy as np

#: ImageNet-1k class indices of garments (cardigan, jersey, miniskirt, trench coat, jean, gown, suit,
#: sweatshirt, overskirt, abaya, academic gown, apron, bikini, brassiere, bulletproof vest, cloak,
#: fur coat, hoopskirt, kimono, lab coat, maillot ×2, pajama, poncho, sarong, stole, swimming trunks,
#: vestment)
GARMENT_CLASSES = (474, 610, 655, 869, 608, 578, 834, 841, 689, 399, 400, 411, 445, 459, 465, 501,
                   568, 601, 614, 617, 638, 639, 697, 735, 775, 824, 842, 887)


def load_images(paths: List[Path], size: int = 224) -> np.ndarray:
    """RGB uint8 (N, size, size, 3): each photo resized whole (aspect not kept, as ImageNet eval)."""
    import cv2

    out = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{p}: cannot decode")
        out.append(cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def garment_top5_share(net, images_uint8: np.ndarray, scale=(1 / 127.5, -1.0)) -> float:
    """Share of images (N, S, S, 3) whose top-5 classes hold a garment; inputs x·scale[0] + scale[1]."""
    x = images_uint8.astype(np.float32) * scale[0] + scale[1]
    logits = np.asarray(net.predict(x, batch_size=32, verbose=0))
    top5 = np.argsort(-logits, axis=1)[:, :5]
    garments = np.isin(top5, GARMENT_CLASSES).any(axis=1)
    return float(garments.mean())


def classifier(backbone: str, size: int = 224, transpose_kernels: bool = False):
    """The converted network with its ImageNet classifier; `transpose_kernels` swaps kh/kw of every
    convolution (a known-wrong conversion, for contrast)."""
    from pipeline.models import efficientnet_lite as lite

    blocks, stem, head, weights = lite.load_converted(lite.weights_file(backbone))
    net = lite.build_network(blocks, stem, head, (size, size, 3), backbone, include_top=True)
    for layer in net.layers:
        if layer.name in weights:
            ws = weights[layer.name]
            if transpose_kernels:
                ws = [np.swapaxes(w, 0, 1) if w.ndim == 4 else w for w in ws]
            layer.set_weights(ws)
    return net


def check(images_dir: Path, backbone: str = "efficientnet_lite0", every: int = 20, limit: int = 100) -> Dict:
    paths = sorted(Path(images_dir).rglob("*.jpg"))[::every][:limit]
    if not paths:
        raise SystemExit(f"imagenet_check: no .jpg under {images_dir}")
    images = load_images(paths)
    net = classifier(backbone)
    return {
        "backbone": backbone, "images": len(paths),
        "garment_top5": garment_top5_share(net, images),
        "garment_top5_input_0_255": garment_top5_share(net, images, (1.0, 0.0)),
        "garment_top5_kernels_transposed": garment_top5_share(classifier(backbone, transpose_kernels=True), images),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", required=True, type=Path)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    result = check(args.images, args.backbone, args.every, args.limit)
    text = json.dumps(result, indent=2)
    if args.json:
        from pipeline.fsutil import write_text_atomic

        write_text_atomic(args.json, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
