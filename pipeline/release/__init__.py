"""Releases: exported bundles and their runtimes (Keras, SavedModel, TFLite, ONNX)."""
