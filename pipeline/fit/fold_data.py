"""Which images a model trains and validates on, and its validation NE (the one `train` monitors).

FoldData: one model's split of the image cache (a category's images, or every run category's
for a joint model, pipeline/joint.py); with crops (pipeline/heatmap/zoom.py) the cache is larger than
the input and validation runs both passes, as `predict` does.
"""
from __future__ import annotations

import numpy as np

from pipeline import joint
from pipeline.config import Config
from pipeline.data import SampleSet, to_input_frame
from pipeline.frames import letterbox_table
from pipeline.heatmap import codec, zoom
from pipeline.heatmap.inference import predict_heatmaps
from pipeline.scoring.metrics import category_ne, normalized_error
from pipeline.store.rundata import RunData


class FoldData:
    """One model's training and validation split of the image cache: a category's images, or
    every image of the run's categories for the joint model (`category` = joint.JOINT).

    train/val: SampleSet in input pixels, K = the model's channels (joint.channels); val is the
    whole fold, the val_* arrays (what validation_ne scores) at most `train.val_images` of it;
    val_keypoints: (M, 24, 3) original pixels; val_params: (M, 4) letterbox transforms;
    val_ids, val_categories: (M,).
    """

    def __init__(self, prep: RunData, cfg: Config, category: str, fold: int):
        index = prep.train_index()
        folds = prep.folds(index.image_id)
        images = prep.cache("train")
        cols = joint.channels(category)
        in_cat = joint.image_mask(index.category, category, cfg.data.categories)
        self.category = category
        self.num_keypoints = len(cols)
        self.flip_index = joint.flip_index(category)
        splits = {"train": in_cat & (folds != fold), "val": in_cat & (folds == fold)}
        if not splits["val"].any():
            raise SystemExit(f"train: fold {fold} holds no {category} image (data.folds={cfg.data.folds})")
        crops = cfg.crop.enabled
        # the model's whole-image input frame; with crops the cache (index.params) is larger
        full = letterbox_table(index.sizes, cfg.model.input_size, cfg.model.margin) if crops else index.params
        for name, mask in splits.items():
            xy, vis = to_input_frame(index.keypoints[mask][:, cols], full[mask])
            extra = dict(cache_params=index.params[mask], full_params=full[mask],
                         orig_xy=index.keypoints[mask][:, cols, :2].astype(np.float64),
                         sizes=index.sizes[mask]) if crops else {}
            setattr(self, name, SampleSet(images, index.cache_row[mask], xy, vis, **extra))
        val = splits["val"]
        if 0 < cfg.train.val_images < val.sum():  # the monitored subset: evenly spread over the fold
            where = np.flatnonzero(val)
            val = np.zeros_like(val)
            val[where[np.linspace(0, len(where) - 1, cfg.train.val_images).round().astype(int)]] = True
        self.val_ids = index.image_id[val]
        self.val_categories = np.asarray(index.category[val], dtype=object)
        self.val_keypoints = index.keypoints[val]
        self.val_params = full[val]                 # (M, 4) original → model input (whole image)
        self.val_cache_params = index.params[val]   # (M, 4) original → cache (= val_params without crops)
        self.val_sizes = index.sizes[val]
        self.val_channels = joint.channel_mask(category, self.val_categories)  # (M, K) the image's own
        self.val_images = np.stack([images[r] for r in index.cache_row[val]])  # (M, S, S, 3) uint8 cache


def validation_ne(model, data: FoldData, cfg: Config, forward=None) -> float:
    """NE of the model on the validation fold (original pixels, no TTA; with crops both passes,
    zoom.two_pass); `forward` as in `predict_heatmaps`."""
    decoder = codec.Codec.from_config(cfg)

    def predict(images, params):
        heatmaps = predict_heatmaps(model, images, cfg.predict.batch_size, forward)
        xy, _ = decoder.decode_to_original(heatmaps, params)
        return {"xy": xy}

    if cfg.crop.enabled:
        xy = zoom.two_pass(predict, data.val_images, data.val_cache_params, data.val_params, data.val_sizes,
                           cfg.crop, cfg.model.input_size, data.val_channels)["xy"]
    else:
        xy = predict(data.val_images, data.val_params)["xy"]
    if data.category != joint.JOINT:
        return category_ne(data.val_keypoints, xy, data.category)
    return normalized_error(data.val_keypoints, xy, data.val_categories)["ne"]
