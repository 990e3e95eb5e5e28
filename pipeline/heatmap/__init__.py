"""Heatmaps: the codec, losses, one inference path (validation, OOF, test), flip TTA, the crop zoom."""
