"""Other runtimes for the trained networks, TFLite and ONNX, measured against Keras.

`convert` turns a Keras model into a TFLite flatbuffer (float32, through a SavedModel, the
path TensorFlow supports for Keras 3 models); `convert_onnx` into an ONNX model (tf2onnx,
opset 17). `TFLiteModel` and `OnnxModel` wrap an interpreter / onnxruntime session in the two
members `predict.predict_images` uses (`predict_on_batch`, `output_shape`), so each runs
through the same TTA, crop pass and decoding as Keras: parity is measured on keypoints, not
only on heatmaps (tests/unit/release/test_runtimes.py, tests/integration/test_bundle.py, `make bench`).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def float32_model(model):
    """The same network with every layer computing in float32: a model trained under a mixed
    policy (mixed_bfloat16 on bf16 CPUs, mixed_float16 on GPUs) keeps that policy in its saved
    config, and TFLite and ONNX have no bfloat16 kernels. The weights (float32 variables under a
    mixed policy too) are copied unchanged; a float32 model is returned as it is."""
    import keras

    def plain(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and str(node.get("config", {}).get("name", "")).startswith("mixed_"):
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {k: plain(v) for k, v in node.items()}
        if isinstance(node, list):
            return [plain(v) for v in node]
        return node

    config = model.get_config()
    if plain(config) == config:
        return model
    previous = keras.mixed_precision.global_policy()  # layers whose config names no policy take it
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = model.__class__.from_config(plain(config))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def convert_saved_model(directory) -> bytes:
    """TFLite flatbuffer (float32) of a SavedModel directory (Keras' `model.export`)."""
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(directory)).convert()


def convert(model) -> bytes:
    """TFLite flatbuffer of a Keras model (float32 weights and activations), through a SavedModel:
    the path TensorFlow supports for Keras 3 models."""
    with tempfile.TemporaryDirectory() as tmp:
        float32_model(model).export(str(Path(tmp) / "saved"), verbose=False)
        return convert_saved_model(Path(tmp) / "saved")


class TFLiteModel:
    """A TFLite model with Keras' `predict_on_batch` and `output_shape` (batch dimension None)."""

    def __init__(self, content: bytes, threads: int = 1):
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():  # tf.lite.Interpreter's notice that LiteRT will replace it
            warnings.simplefilter("ignore", UserWarning)
            self._interp = tf.lite.Interpreter(model_content=content, num_threads=max(1, int(threads)))
        self._input = self._interp.get_input_details()[0]
        self._output = self._interp.get_output_details()[0]
        self._batch = None
        self.output_shape = (None,) + tuple(int(d) for d in self._output["shape"][1:])

    @classmethod
    def from_file(cls, path, threads: int = 1) -> "TFLiteModel":
        return cls(Path(path).read_bytes(), threads)

    def predict_on_batch(self, inputs: np.ndarray) -> np.ndarray:
        """Outputs of a batch (N, S, S, 3) uint8 (cast to the model's input type), as Keras returns them."""
        inputs = np.asarray(inputs)
        if self._batch != len(inputs):
            self._interp.resize_tensor_input(self._input["index"], [len(inputs)] + list(inputs.shape[1:]))
            self._interp.allocate_tensors()
            self._input = self._interp.get_input_details()[0]
            self._output = self._interp.get_output_details()[0]
            self._batch = len(inputs)
        self._interp.set_tensor(self._input["index"], inputs.astype(self._input["dtype"]))
        self._interp.invoke()
        return self._interp.get_tensor(self._output["index"]).copy()


def convert_onnx(model, opset: int = 17) -> bytes:
    """Serialized ONNX model of a Keras model (uint8 image input of any batch size, float32 output)."""
    import tensorflow as tf
    import tf2onnx

    model = float32_model(model)
    size = model.input_shape[1:]
    spec = (tf.TensorSpec((None,) + tuple(size), tf.uint8, name="image"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    return proto.SerializeToString()


class OnnxModel:
    """An ONNX model (onnxruntime, CPU) with Keras' `predict_on_batch` and `output_shape`."""

    def __init__(self, content: bytes, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        shape = self._session.get_outputs()[0].shape
        self.output_shape = (None,) + tuple(int(d) for d in shape[1:])

    @classmethod
    def from_file(cls, path, threads: int = 1) -> "OnnxModel":
        return cls(Path(path).read_bytes(), threads)

    def predict_on_batch(self, inputs: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: np.asarray(inputs, np.uint8)})[0]
