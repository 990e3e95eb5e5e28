"""Multi-scale TTA (predict.scales): rescaling about the centre and the way back, through codec."""
import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.heatmap import codec
from pipeline.heatmap.inference import predict_images
from pipeline.keypoints import category_flip_index

S, STRIDE = 64, 4


def blob_images(points, sigma=6.0):
    """uint8 images (N, S, S, 3) with one Gaussian blob (input pixels) per image."""
    ys, xs = np.mgrid[:S, :S]
    out = [np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2)) for x, y in points]
    return np.repeat((np.stack(out) * 255).round().astype(np.uint8)[..., None], 3, -1)


class BlobModel:
    """A stand-in 'model' whose K maps are the image's first channel averaged over stride×stride
    blocks: it finds a blob wherever the (rescaled) input shows it, like a perfect detector."""

    def __init__(self, k):
        self.k = k
        self.output_shape = (None, 1, S // STRIDE, S // STRIDE, k)

    def predict_on_batch(self, x):
        x = np.asarray(x, np.float32)[..., 0] / 255.0
        pooled = x.reshape(len(x), S // STRIDE, STRIDE, S // STRIDE, STRIDE).mean((2, 4))
        return np.repeat(pooled[:, None, :, :, None], self.k, -1)


def test_rescaled_image_moves_points_by_the_centre_matrix():
    x, y = 20.0, 41.0
    for scale in (0.8, 1.25):
        img = codec.rescale_images(blob_images([(x, y)], sigma=2.0), scale)[0, ..., 0].astype(float)
        m = codec.centre_scale_matrix(S, scale)
        expected = m[:, :2] @ [x, y] + m[:, 2]
        ys, xs = np.mgrid[:S, :S]
        found = [(img * xs).sum() / img.sum(), (img * ys).sum() / img.sum()]
        np.testing.assert_allclose(found, expected, atol=0.15)


@pytest.mark.parametrize("scale", [0.8, 1.2, 1.5])
def test_maps_and_cells_return_to_the_base_frame(scale):
    base_uv = np.array([[5.3, 9.6], [10.2, 6.1]])
    m = codec.matrix_to_cells(codec.centre_scale_matrix(S, scale), STRIDE)
    scaled_uv = base_uv @ m[:, :2].T + m[:, 2]
    h = S // STRIDE
    maps = codec.encode(scaled_uv, np.ones(2), (h, h), 1.5 * scale)[None]  # the scaled view's Gaussian
    back = codec.maps_to_base(maps, scale, STRIDE)
    uv, _ = codec.decode(back, "dark", 1.5)
    np.testing.assert_allclose(uv[0], base_uv, atol=0.1)
    np.testing.assert_allclose(codec.cells_to_base(scaled_uv, scale, STRIDE, S), base_uv, atol=1e-9)
    if scale > 1:  # zoomed in: the base input's corners were not seen
        assert back[0, 0, 0].max() == 0 and back[0, -1, -1].max() == 0


def test_scale_one_is_the_identity():
    maps = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    assert codec.maps_to_base(maps, 1.0, STRIDE) is maps or np.array_equal(codec.maps_to_base(maps, 1.0, STRIDE), maps)
    images = blob_images([(10, 10)])
    assert np.array_equal(codec.rescale_images(images, 1.0), images)


@pytest.mark.parametrize("scales", [[1.0], [0.8, 1.0, 1.25], [0.9, 1.1]])
@pytest.mark.parametrize("merge", ["heatmap", "coords"])
def test_multiscale_predictions_land_on_the_points(scales, merge):
    """Every pass (scale × mirror) is mapped back to the same original-pixel point."""
    points = [(20.3, 30.6), (40.1, 22.7), (31.5, 44.2)]
    cfg = load_config("configs/demo.yaml", [f"model.input_size={S}", f"predict.scales={scales}",
                                            f"predict.merge={merge}", "predict.flip_tta=true",
                                            "predict.batch_size=4"])
    flip = category_flip_index("skirt")
    params = np.tile([1.0, 1.0, 0.0, 0.0], (3, 1))
    pred = predict_images(BlobModel(len(flip)), blob_images(points), params, cfg, flip)
    for name in ("xy", "xy_plain", "xy_mirror", "xy_heatmap", "xy_coords"):
        err = np.abs(pred[name] - np.array(points)[:, None, :]).max()
        assert err < 0.5, (name, err)


def test_predict_scales_is_a_predict_setting():
    a = load_config("configs/demo.yaml")
    b = load_config("configs/demo.yaml", ["predict.scales=[0.8,1.0,1.2]"])
    assert a.predict.scales == (1.0,) and b.predict.scales == (0.8, 1.0, 1.2)
    assert a.stage_settings("predict") != b.stage_settings("predict")
    assert a.stage_settings("train") == b.stage_settings("train")


@pytest.mark.parametrize("bad", ["[]", "[0.1]", "[a]"])
def test_bad_scales_rejected(bad):
    with pytest.raises(ValueError, match="predict.scales"):
        load_config("configs/demo.yaml", [f"predict.scales={bad}"])
