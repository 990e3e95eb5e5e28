"""Distribution and hardware by configuration, without a GPU: batch/LR scaling, input sharding,
worker roles, GPU slots for make -j, memory growth, precision choice, loss scaling, sync BN."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import REPO as ROOT  # noqa: E402

from pipeline import data, distributed, hardware
from pipeline.config import load_config


def tiny(*extra):
    return load_config(ROOT / "configs/demo.yaml", ["model.input_size=32", "model.width=8", "model.stages=1",
                                                    *extra])


# --------------------------------------------------------------------------- batch, LR, sharding


def test_batch_is_per_replica_and_lr_scales_linearly():
    assert distributed.global_batch(16, 1) == 16 and distributed.global_batch(16, 4) == 64
    assert distributed.scaled_lr(1e-3, 4, "linear") == pytest.approx(4e-3)
    assert distributed.scaled_lr(1e-3, 4, "none") == pytest.approx(1e-3)
    assert distributed.scaled_lr(1e-3, 1, "linear") == pytest.approx(1e-3)  # one device: unchanged
    with pytest.raises(ValueError, match="lr_scaling"):
        distributed.scaled_lr(1e-3, 2, "sqrt")
    with pytest.raises(ValueError, match="train.lr_scaling"):
        tiny("train.lr_scaling=sqrt")


def test_shards_partition_each_global_batch():
    parts = [distributed.shard_slice(96, 32, p, 4) for p in range(4)]
    assert parts == [(96, 104), (104, 112), (112, 120), (120, 128)]
    with pytest.raises(ValueError, match="evenly"):
        distributed.shard_slice(0, 10, 0, 3)


def stream(monkeypatch, cfg, n_elements, **kwargs):
    """First counters of the elements a (sharded) train_dataset yields; make_batch stubbed to echo counters."""
    def echo(samples, counters, cfg, flip_index, training=True):
        b, s, k = len(counters), cfg.model.input_size, samples.xy.shape[1]
        images = np.zeros((b, s, s, 3), np.uint8)
        maps = np.zeros((b, cfg.heatmap_size, cfg.heatmap_size, k), np.float32)
        return images, maps, np.asarray(counters, np.float32)[:, None].repeat(k, 1)

    monkeypatch.setattr(data, "make_batch", echo)
    samples = data.SampleSet(np.zeros((4, 32, 32, 3), np.uint8), np.arange(4), np.zeros((4, 3, 2)),
                             np.ones((4, 3), np.int64))
    ds = data.train_dataset(samples, cfg, [0, 1, 2], **kwargs)
    return [list(w[:, 0].astype(int)) for _, (_, w) in ds.take(n_elements).as_numpy_iterator()]


def test_each_worker_builds_only_its_share(monkeypatch):
    """Two workers with two replicas each, batch 2 per replica: together exactly the one-device stream."""
    cfg = tiny("train.batch_size=2")
    single = stream(monkeypatch, cfg, 8, start_counter=16)
    workers = [stream(monkeypatch, cfg, 4, start_counter=16, batch_size=2, global_size=8, pipeline=p,
                      pipelines=2) for p in range(2)]
    assert workers[0][:2] == [[16, 17], [18, 19]] and workers[1][:2] == [[20, 21], [22, 23]]
    merged = []
    for step in range(2):  # a global step takes 2 elements (its replicas) from each worker
        for w in workers:
            merged += w[2 * step:2 * step + 2]
    assert merged == single
    assert sum(len(e) for w in workers for e in w) == sum(len(e) for e in single)  # nothing built twice


# --------------------------------------------------------------------------- multi-worker roles


def test_chief_is_chief_task_or_worker_zero(monkeypatch):
    workers = {"worker": ["a:1", "b:2"]}
    assert distributed.is_chief({})
    assert distributed.is_chief({"cluster": workers, "task": {"type": "worker", "index": 0}})
    assert not distributed.is_chief({"cluster": workers, "task": {"type": "worker", "index": 1}})
    with_chief = {**workers, "chief": ["c:3"]}
    assert distributed.is_chief({"cluster": with_chief, "task": {"type": "chief", "index": 0}})
    assert not distributed.is_chief({"cluster": with_chief, "task": {"type": "worker", "index": 0}})
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(RuntimeError, match="TF_CONFIG"):
        distributed.tf_config()


def test_non_chief_writes_into_a_removed_scratch_copy(tmp_path, monkeypatch):
    out = tmp_path / "fold0"
    (out / "resume").mkdir(parents=True)
    (out / "resume/state.json").write_text("{}")
    (out / "history.csv").write_text("epoch\n0\n")
    cluster = {"worker": ["a:1", "b:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    with distributed.worker_dir(out, "multiworker") as d:
        assert d == out
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    with distributed.worker_dir(out, "multiworker") as d:
        assert d != out and (d / "resume/state.json").exists() and (d / "history.csv").exists()
        (d / "model.keras").write_text("scratch")
    assert not d.exists()
    assert not (out / "model.keras").exists()
    with distributed.worker_dir(out, "mirrored") as d:  # TF_CONFIG only matters for multiworker
        assert d == out


# --------------------------------------------------------------------------- one GPU per make job


def test_make_jobs_get_gpus_round_robin(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    got = []
    try:
        for _ in range(3):  # three `make -j3` trainings on two GPUs
            got.append(distributed.claim_gpu("auto", 3, n_gpus=2, lock_dir=tmp_path))
            assert os.environ.pop("CUDA_VISIBLE_DEVICES") == str(got[-1])
    finally:
        distributed.release_gpu()
    assert got == [0, 1, 0]
    assert distributed.claim_gpu("auto", 3, n_gpus=2, lock_dir=tmp_path) == 0  # released slots reused
    distributed.release_gpu()
    os.environ.pop("CUDA_VISIBLE_DEVICES")
    assert distributed.claim_gpu("mirrored", 3, n_gpus=2, lock_dir=tmp_path) is None  # wants every GPU
    assert distributed.claim_gpu("auto", 1, n_gpus=2, lock_dir=tmp_path) is None       # no make -j
    assert distributed.claim_gpu("auto", 3, n_gpus=1, lock_dir=tmp_path) is None       # nothing to split
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert distributed.claim_gpu("auto", 3, n_gpus=2, lock_dir=tmp_path) is None       # the user chose
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"


# --------------------------------------------------------------------------- hardware


class FakeGPU:
    def __init__(self, name):
        self.name, self.device_type = name, "GPU"


def test_memory_growth_on_for_every_gpu(monkeypatch):
    import tensorflow as tf

    gpus = [FakeGPU("/physical_device:GPU:0"), FakeGPU("/physical_device:GPU:1")]
    grown = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", lambda d, on: grown.append((d.name, on)))
    assert hardware.enable_memory_growth() == 2
    assert grown == [(g.name, True) for g in gpus]


@pytest.mark.parametrize("caps,policy", [([(7, 0)], "mixed_float16"), ([(8, 0), (9, 0)], "mixed_bfloat16"),
                                         ([(8, 6), (7, 5)], "mixed_float16")])
def test_auto_precision_on_gpus(monkeypatch, caps, policy):
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: caps)
    assert hardware.resolve_precision("auto") == policy
    assert hardware.resolve_precision("float32") == "float32"


def test_auto_precision_on_cpu(monkeypatch):
    monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: [])
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    assert hardware.resolve_precision("auto") == "mixed_bfloat16"
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    assert hardware.resolve_precision("auto") == "float32"


def test_mixed_float16_trains_with_loss_scaling():
    """train.py's compile under mixed_float16 gets a dynamic LossScaleOptimizer (keras wraps it)."""
    import keras

    from pipeline.fit.trainer import make_trainer
    from pipeline.models import build_model

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        trainer = make_trainer(build_model(tiny(), 3))
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert float(trainer.optimizer.scale_loss(1.0)) == trainer.optimizer.initial_scale > 1  # losses scaled


@pytest.mark.slow  # builds, saves and reloads a synced-BN model (~9 s)
def test_sync_bn_is_a_config_key_and_round_trips(tmp_path):
    import keras

    from pipeline.models import build_model

    def bn_layers(model):
        out = []
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                out += bn_layers(layer)
            elif isinstance(layer, keras.layers.BatchNormalization):
                out.append(layer)
        return out

    keras.utils.set_random_seed(0)
    plain = build_model(tiny("model.backbone=mobilenetv2", "model.weights=null"), 3)
    keras.utils.set_random_seed(0)
    synced = build_model(tiny("model.backbone=mobilenetv2", "model.weights=null", "model.sync_bn=true"), 3)
    assert {b.synchronized for b in bn_layers(plain)} == {False}
    assert {b.synchronized for b in bn_layers(synced)} == {True}
    assert len(bn_layers(synced)) == len(bn_layers(plain)) > 10  # the backbone's own BN layers too
    x = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(synced.predict_on_batch(x), plain.predict_on_batch(x), atol=1e-6)
    synced.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert {b.synchronized for b in bn_layers(loaded)} == {True}


def test_doctor_reports_devices_precision_strategy(capsys):
    from pipeline.stages import doctor

    assert doctor.main(["--config", str(ROOT / "configs/full.yaml")]) == 0
    text = capsys.readouterr().out
    for key in ("tensorflow", "gpus", "precision", "distribute", "threads", "cpu_bf16"):
        assert key in text
    assert "auto -> " in text
    assert hardware.auto_strategy_name("auto", 4) == "MirroredStrategy over 4 GPUs"
    assert hardware.auto_strategy_name("auto", 1).startswith("default")


def test_input_throughput_reports_rates():
    from pipeline.tools.throughput import input_throughput

    cfg = tiny("train.batch_size=4")
    r = input_throughput(cfg, seconds=0.2, n_images=8)
    assert r["img_per_s_per_core"] > 0 and r["img_per_s_all_cores"] > 0
    assert r["input_size"] == 32 and 0 < r["encode_fraction"] <= 1 and r["targets"] == "host"
    assert r["bytes_per_image"] == 32 * 32 * 3 + 8 * 8 * r["keypoints"] * 4 + r["keypoints"] * 4


# --------------------------------------------------------------------------- targets encoded on the device


def test_device_encoding_equals_host_encoding():
    from keras import ops

    from pipeline.heatmap import codec

    rng = np.random.default_rng(3)
    uv = rng.uniform(-2, 18, (3, 5, 2))
    weight = (rng.random((3, 5)) > 0.3).astype(np.float32)
    host = np.stack([codec.encode(uv[i], weight[i], (16, 12), 1.5) for i in range(3)])
    device = ops.convert_to_numpy(codec.encode_tensor(uv.astype(np.float32), weight, (16, 12), 1.5))
    assert device.shape == host.shape == (3, 16, 12, 5)
    np.testing.assert_allclose(device, host, atol=1e-6)


def test_device_targets_ship_keypoints_and_give_the_same_loss():
    """train.targets=device: batches carry (B, K, 2) keypoints; the trainer's loss equals the host-heatmap loss."""
    from pipeline.fit.trainer import make_trainer
    from pipeline.models import build_model

    host_cfg, dev_cfg = tiny("augment.enabled=false"), tiny("augment.enabled=false", "train.targets=device")
    rng = np.random.default_rng(0)
    samples = data.SampleSet(rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8), np.arange(4),
                             rng.uniform(4, 28, (4, 3, 2)), np.ones((4, 3), np.int64))
    img_h, maps, w_h = data.make_batch(samples, np.arange(4), host_cfg, [0, 1, 2])
    img_d, uv, w_d = data.make_batch(samples, np.arange(4), dev_cfg, [0, 1, 2])
    assert maps.shape == (4, 8, 8, 3) and uv.shape == (4, 3, 2)
    np.testing.assert_array_equal(img_h, img_d)
    trainer = make_trainer(build_model(host_cfg, 3), host_cfg.train.loss, host_cfg.codec.sigma)
    pred = trainer(img_h)
    loss_host = float(trainer.compute_loss(y=(maps, w_h), y_pred=pred))
    loss_dev = float(trainer.compute_loss(y=(uv, w_d), y_pred=pred))
    assert loss_dev == pytest.approx(loss_host, rel=1e-5)


def test_model_flops_grow_with_the_input_area():
    from pipeline.tools.throughput import config_flops

    small, large = config_flops(tiny()), config_flops(tiny("model.input_size=64"))
    assert small["forward_gflops"] > 0 and small["train_gflops"] == pytest.approx(3 * small["forward_gflops"])
    assert large["forward_gflops"] == pytest.approx(4 * small["forward_gflops"], rel=1e-6)  # all convs scale with H·W
    assert large["params"] == small["params"]
