"""rsmoe's own pretrained stand-ins: a small DINOv3-architecture backbone, a Depth Anything-architecture height
model and a CLIP pair, pretrained on the synthetic world's corpus (:mod:`rsmoe.pretrain.corpus`) by the recipes of
``rsmoe pretrain backbone|depth|clip``. The shipped weights live in :mod:`rsmoe.pretrained`.

Importing this package is cheap: the torch-backed modules load when used.
"""
