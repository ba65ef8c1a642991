"""The pretrained stand-ins shipped with rsmoe (weights, config and model card per folder).

* ``backbone/`` — a small ViT in the transformers DINOv3 architecture, self-supervised on the synthetic world's
  RGB corpus (``backbone.kind: dinov3``, ``backbone.pretrained: <folder>``);
* ``depth/`` — a small Depth Anything-architecture height model whose encoder matches the backbone block for
  block (``depth.pretrained: <folder>``);
* ``clip/`` — a small CLIP pair with its tokenizer (``mpers.text_encoder: <folder>``, the caption check's
  ``quality.clip: <folder>``).

Configs name them ``rsmoe:backbone``, ``rsmoe:depth``, ``rsmoe:clip`` (:mod:`rsmoe.shipped` resolves the
reference to this folder). They are not DINOv3, Depth Anything or OpenAI CLIP: see each folder's ``README.md`` for
the recipe (``rsmoe pretrain …``), the SHA-256 of the weights and the measured quality.
"""
