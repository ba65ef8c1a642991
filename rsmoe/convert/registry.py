"""The converter formats (:data:`FORMATS`; ``rsmoe convert --list`` prints them). Importing this module is cheap
(no torch): the command line builds its help from it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConverterFormat:
    """One ``rsmoe convert`` format: its name, what it reads, what it writes and a one-line description."""

    name: str
    input: str
    output: str
    description: str


FORMATS: dict[str, ConverterFormat] = {
    f.name: f
    for f in (
        ConverterFormat("dinov3-original", "Meta DINOv3 .pth (release file or training checkpoint)",
                        "transformers directory (backbone.pretrained)",
                        "DINOv3 original checkpoint → DINOv3ViTModel.save_pretrained"),
        ConverterFormat("depth-anything-original", "Depth Anything V1/V2 .pth",
                        "transformers directory (depth.pretrained)",
                        "→ DepthAnythingForDepthEstimation (or --encoder-only: Dinov2Model)"),
        ConverterFormat("prompt-depth-anything-original", "Prompt Depth Anything .ckpt",
                        "transformers directory (depth.pretrained)",
                        "→ PromptDepthAnythingForDepthEstimation (or --encoder-only: Dinov2Model)"),
        ConverterFormat("dofa-original", "DOFA_ViT_*_e100.pth (authors)", ".safetensors (backbone.pretrained)",
                        "DOFA v1 backbone tensors + kernel layout and source SHA-256 in the metadata"),
        ConverterFormat("dofa-torchgeo", "TorchGeo DOFA .pth", ".safetensors (backbone.pretrained)",
                        "DOFA v1 backbone tensors + kernel layout and source SHA-256 in the metadata"),
        ConverterFormat("spectralmoe-official", "authors' mmseg .pth (SpectralMoE)", "rsmoe .safetensors checkpoint",
                        "adapter + Mask2Former head → rsmoe checkpoint; needs --config"),
        ConverterFormat("dilateformer", "DilateFormer .pth (JIAOJIAYUASD/dilateformer)",
                        ".safetensors of one stage's blocks (mpers.adapter_pretrained)",
                        "DilateFormer blocks → MPerS adapter blocks; needs --stage"),
    )
}

#: What ``rsmoe convert`` does, for its ``--help``.
DESCRIPTION = ("Convert public checkpoints into what rsmoe loads (never from the hub): DINOv3, Depth Anything, DOFA, "
               "DilateFormer blocks, and the authors' SpectralMoE checkpoints.")

__all__ = ["DESCRIPTION", "FORMATS", "ConverterFormat"]
