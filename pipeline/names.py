"""The allowed names of every registry, declared once (foundation: no heavy imports).

The config validates its choices against these (`config._CHOICES`), and each registry is keyed
by them: models.MODELS by HEADS, models.backbones.BACKBONES by BACKBONES (less the built-in
"simple" stem), heatmap.losses by LOSSES, heatmap.codec.decode by REFINES
(tests/unit/test_names.py holds each registry to its names).
"""
HEADS = ("cpm", "simplebaseline", "hourglass", "cpn")
BACKBONES = ("simple", "mobilenetv2", "resnet50", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
LOSSES = ("mse", "softmax_ce")
REFINES = ("none", "quarter", "dark")
