"""Predict: out-of-fold and test predictions of every (category, fold) model.

Each image and its mirror go through the model in one batch; the mirror's
heatmaps are flipped back with the left/right channels swapped (tta.py) and
combined with the plain ones, by heatmap averaging or coordinate averaging
(`predict.merge`). With `predict.scales` (multi-scale TTA) every scale is one
more such pass on the image rescaled about its centre, mapped back to the base
frame by codec's helpers, and merged the same way. Both merges and the plain pass are stored, and their OOF
NE is written to `predict.json`, so the choice is measured, not assumed.

Writes OUTPUT/runs/<run>/<cat>/fold<k>/oof.npz and test.npz with `image_id`,
`xy` (M, K, 2 float, original pixels, the configured merge), `score`, and the
variants `xy_plain`, `xy_mirror`, `xy_heatmap`, `xy_coords` plus peak
features (`peak2_val`, `peak2_dist`, `sharpness`) for the stacker.

CLI: python -m pipeline.predict --output DIR [--config C] [--run RUN]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, Iterator, Sequence, Tuple

import numpy as np
import pandas as pd

from . import codec, hardware, joint, tta, zoom
from .config import Config, config_from_args, stage_parser
from .metrics import category_ne
from .artifacts import digest, file_id, is_current, read_record, write_record
from .predictions import fold_dir, run_dir, save_npz
from .preprocess import RunData, letterbox_table, run_data


def peak_features(heatmaps: np.ndarray, uv: np.ndarray, radius: int = 2) -> Dict[str, np.ndarray]:
    """Confidence features of heatmaps (N, h, w, K) around decoded peaks uv (N, K, 2) in cells.

    sharpness: peak minus the mean of its 5×5 neighbourhood; peak2_val and
    peak2_dist: value of, and distance (cells) to, the highest point farther
    than `radius` cells from the peak. Each (N, K).
    """
    n, h, w, k = heatmaps.shape
    maps = heatmaps.transpose(0, 3, 1, 2)  # (N, K, h, w) view
    px = np.clip(np.rint(uv[..., 0]), 0, w - 1).astype(np.float32)[..., None, None]
    py = np.clip(np.rint(uv[..., 1]), 0, h - 1).astype(np.float32)[..., None, None]
    dist2 = (np.arange(w, dtype=np.float32) - px) ** 2 + (np.arange(h, dtype=np.float32)[:, None] - py) ** 2
    peak = maps.reshape(n, k, -1).max(-1)
    near = dist2 <= 8.0  # the 5×5 neighbourhood less its corners' far cells
    local_mean = (maps * near).sum((-1, -2)) / np.maximum(near.sum((-1, -2)), 1)
    far = np.where(dist2 > radius ** 2, maps, -np.inf).reshape(n, k, -1)
    idx = far.argmax(-1)
    peak2 = np.take_along_axis(far, idx[..., None], -1)[..., 0]
    peak2_dist = np.sqrt(np.take_along_axis(dist2.reshape(n, k, -1), idx[..., None], -1)[..., 0])
    return {"sharpness": peak - local_mean, "peak2_val": np.where(np.isfinite(peak2), peak2, 0.0),
            "peak2_dist": peak2_dist}


def padded_batches(images: np.ndarray, batch_size: int) -> Iterator[Tuple[np.ndarray, int]]:
    """(batch, n) for consecutive slices of `images` (N, ...): every batch has `batch_size`
    rows, the last one padded with zeros, so a traced model function is traced once; `n` is
    the number of real rows."""
    for i in range(0, len(images), batch_size):
        batch = np.asarray(images[i:i + batch_size])
        n = len(batch)
        if n < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - n,) + batch.shape[1:], batch.dtype)])
        yield batch, n


def predict_images(model, images: np.ndarray, params: np.ndarray, cfg: Config,
                   flip_index: Sequence[int], return_heatmaps: bool = False) -> Dict[str, np.ndarray]:
    """Keypoints of uint8 images (N, S, S, 3) with letterbox params (N, 4).

    Passes: every scale of `predict.scales` (the image rescaled about its centre,
    codec.rescale_images), each with its mirror when `predict.flip_tta`; every
    pass's maps and keypoints are brought back to the base input's heatmap cells
    (codec.maps_to_base, codec.cells_to_base; mirrors flipped back first).
    Returns arrays in original pixels: xy (the configured merge), xy_plain (mean
    keypoints of the unmirrored passes), with flip TTA xy_mirror (of the mirrored
    passes), and with more than one pass xy_heatmap (decoded from the mean map)
    and xy_coords (mean keypoints of all passes); score (N, K) and the peak
    features. One model call per batch and scale holds both the images and their mirrors.
    With a single scale 1.0 this is plain flip TTA. With return_heatmaps, also
    `heatmaps`: the merged maps (N, h, w, K) the keypoints were decoded from.
    """
    stride, refine, sigma = cfg.model.stride, cfg.codec.refine, cfg.codec.sigma
    flip = cfg.predict.flip_tta
    scales = tuple(cfg.predict.scales)
    size = images.shape[1] if len(images) else cfg.model.input_size
    raw = {(s, m): [] for s in scales for m in ((False, True) if flip else (False,))}
    # the model sees predict.batch_size inputs per call either way: with flip TTA that is
    # half as many images plus their mirrors, so TTA costs two passes, not a bigger batch shape
    bs = max(1, cfg.predict.batch_size // 2) if flip else cfg.predict.batch_size
    for batch, n in padded_batches(images, bs):
        for s in scales:
            scaled = codec.rescale_images(batch, s)
            inputs = np.concatenate([scaled, tta.flip_images(scaled)]) if flip else scaled
            out = model.predict_on_batch(inputs)[:, -1].astype(np.float32)
            raw[(s, False)].append(out[:n])
            if flip:
                raw[(s, True)].append(out[bs:bs + n])
    empty = np.zeros((0,) + tuple(model.output_shape[2:]), np.float32)
    maps, cells = {}, {}
    for (s, mirrored), parts in raw.items():
        hm = np.concatenate(parts) if parts else empty
        uv, _ = codec.decode(hm, refine, sigma)
        if mirrored:
            hm = tta.flip_back_heatmaps(hm, flip_index)
            uv = tta.flip_back_cells(uv, hm.shape[2], flip_index)
        maps[(s, mirrored)] = codec.maps_to_base(hm, s, stride)
        cells[(s, mirrored)] = codec.cells_to_base(uv, s, stride, size)
    result = {"xy_plain": np.mean([uv for (s, m), uv in cells.items() if not m], axis=0)}
    if flip:
        result["xy_mirror"] = np.mean([uv for (s, m), uv in cells.items() if m], axis=0)
    if len(maps) > 1:
        merged = np.mean(list(maps.values()), axis=0)
        result["xy_heatmap"], score = codec.decode(merged, refine, sigma)
        result["xy_coords"] = np.mean(list(cells.values()), axis=0)
        chosen_hm = merged
        chosen_uv = result["xy_heatmap"] if cfg.predict.merge == "heatmap" else result["xy_coords"]
    else:
        chosen_hm, chosen_uv = maps[(scales[0], False)], result["xy_plain"]
        _, score = codec.decode(chosen_hm, refine, sigma)
    features = peak_features(chosen_hm, chosen_uv)
    out = {name: codec.cells_to_original(uv, params, stride) for name, uv in result.items()}
    out["xy"] = codec.cells_to_original(chosen_uv, params, stride)
    out["score"] = score
    out.update(features)
    if return_heatmaps:
        out["heatmaps"] = chosen_hm
    return out


def predict_category(model, model_name: str, category: str, images: np.ndarray, params: np.ndarray,
                     sizes: np.ndarray, cfg: Config, return_heatmaps: bool = False) -> Dict[str, np.ndarray]:
    """`predict_images` of one category's images by the model `model_name` (its channels reduced
    to the category's, joint.select_category).

    images: (N, S, S, 3) uint8 cache images with params (N, 4) (original → cache) and sizes (N, 2).
    With crops (crop.enabled) the cache is larger than the input and both passes run
    (zoom.two_pass: the whole image, then the box of its keypoints); the result also holds
    `xy_pass1` and `crop_params`.
    """
    def run(inputs, in_params):
        return joint.select_category(predict_images(model, inputs, in_params, cfg, joint.flip_index(model_name),
                                                    return_heatmaps), model_name, category)

    if not cfg.crop.enabled:
        return run(images, params)
    full = letterbox_table(sizes, cfg.model.input_size, cfg.model.margin)
    return zoom.two_pass(run, images, params, full, sizes, cfg.crop, cfg.model.input_size)


def _variant_ne(pred: Dict[str, np.ndarray], truth: np.ndarray, category: str) -> Dict[str, float]:
    return {name.replace("xy_", "ne_"): category_ne(truth, pred[name], category)
            for name in ("xy_plain", "xy_mirror", "xy_heatmap", "xy_coords", "xy_pass1") if name in pred}


def load_model(path: Path):
    import keras

    if not path.exists():
        raise FileNotFoundError(f"missing model {path} (run `make train-all` first)")
    return keras.models.load_model(path, compile=False)


def predict_inputs(cfg: Config, prep: RunData, model_path: Path) -> Dict:
    """What a fold's predictions depend on: the predict settings, the model file, the prep artifacts."""
    return {"settings": cfg.stage_settings("predict"), "model": file_id(model_path), "prep": prep.identity()}


def predict_fold(output, cfg: Config, run: str, category: str, fold: int, prep: RunData, train_index,
                 folds: np.ndarray, test_index=None, force: bool = False) -> Dict:
    """OOF and test predictions of one fold model; returns the OOF NE of each variant.

    Skipped (nothing rewritten) when predict.json records the same inputs: the same
    model file, prep artifacts and predict settings (`Config.stage_settings("predict")`), the
    category's own (`cfg.for_category`: its `categories:` overrides apply).
    """
    cfg = cfg.for_category(category)
    out = fold_dir(output, run, category, fold)
    model_name = joint.model_for(cfg, category)  # a joint run's model predicts every category
    model_path = fold_dir(output, run, model_name, fold) / "model.keras"
    if not model_path.exists():
        raise FileNotFoundError(f"missing model {model_path} (run `make train-all` first)")
    inputs = predict_inputs(cfg, prep, model_path)
    outputs = [out / "oof.npz"] + ([out / "test.npz"] if test_index is not None else [])
    if not force and is_current(out / "predict.json", inputs, outputs):
        return json.loads((out / "predict.json").read_text())["report"]
    model = load_model(model_path)
    size = cfg.cache_size
    val = (train_index.category == category) & (folds == fold)
    cache = prep.cache("train")
    images = np.stack([cache[r] for r in train_index.cache_row[val]])
    pred = predict_category(model, model_name, category, images, train_index.params[val], train_index.sizes[val],
                            cfg, return_heatmaps=True)
    heatmaps = pred.pop("heatmaps")
    in_params = pred.pop("crop_params", train_index.params[val])  # the frame the heatmaps are in
    save_npz(out / "oof.npz", image_id=train_index.image_id[val], **pred)
    truth = train_index.keypoints[val]
    report = _variant_ne(pred, truth, category)
    for refine in ("none", "quarter", "dark"):  # the decoding choice, measured on the same heatmaps
        xy, _ = codec.decode_to_original(heatmaps, in_params, cfg.model.stride, refine,
                                         cfg.codec.sigma)
        report[f"ne_refine_{refine}"] = category_ne(truth, xy, category)
    if test_index is not None:
        t_mask = test_index.category == category
        t_cache = prep.cache("test")
        t_images = np.stack([t_cache[r] for r in test_index.cache_row[t_mask]]) if t_mask.any() \
            else np.zeros((0, size, size, 3), np.uint8)
        t_pred = predict_category(model, model_name, category, t_images, test_index.params[t_mask],
                                  test_index.sizes[t_mask], cfg)
        t_pred.pop("crop_params", None)
        save_npz(out / "test.npz", image_id=test_index.image_id[t_mask], **t_pred)
    report["merge"] = cfg.predict.merge
    report["flip_tta"] = cfg.predict.flip_tta
    write_record(out / "predict.json", inputs, report=report)  # last: marks the fold's predictions complete
    return report


def run_predict(output, cfg: Config, run: str, force: bool = False) -> pd.DataFrame:
    prep = run_data(output, run, cfg)
    train_index = prep.train_index()
    folds = prep.folds(train_index.image_id)
    test_index = prep.test_index()
    rows = []
    from tqdm import tqdm

    jobs = [(c, f) for c in cfg.data.categories for f in range(cfg.data.folds)]
    fold_inputs = {}
    for cat, fold in tqdm(jobs, desc="predict", unit="model"):
        report = predict_fold(output, cfg, run, cat, fold, prep, train_index, folds, test_index, force)
        rows.append({"category": cat, "fold": fold, **report})
        fold_inputs[f"{cat}/fold{fold}"] = digest(read_record(fold_dir(output, run, cat, fold) / "predict.json")["inputs"])
    table = pd.DataFrame(rows)
    # the run's summary record (make's target): current when every fold's predictions are
    record = run_dir(output, run) / "predictions.json"
    if not is_current(record, fold_inputs):
        write_record(record, fold_inputs, folds=rows)
    return table


def main(argv=None) -> int:
    parser = stage_parser("OOF and test predictions with flip TTA.")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    hardware.setup_inference(cfg)
    try:
        table = run_predict(args.output, cfg, args.run or cfg.name, args.force)
    except (FileNotFoundError, ValueError) as err:
        print(f"predict: error: {err}", file=sys.stderr)
        return 1
    ne_cols = [c for c in table.columns if c.startswith("ne_")]
    print("predict: mean OOF NE over folds — TTA variants (plain, mirror only, heatmap avg, coord avg) and "
          "sub-pixel decodings of the merged maps (refine none / quarter / dark):")
    summary = table.groupby("category")[ne_cols].mean()
    summary.loc["mean"] = summary.mean()
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
