"""Preprocessing: dataset parsing and validation, image decoding, duplicates, folds, image caches, prep report."""
