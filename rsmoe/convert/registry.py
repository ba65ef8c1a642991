"""The converter formats (:data:`FORMATS`; ``rsmoe convert --list`` prints them)."""
from __future__ import annotations

from dataclasses import dataclass


# ================================================================================================================
# Registry
# ================================================================================================================
@dataclass(frozen=True)
class ConverterFormat:
    name: str
    input: str
    output: str
    description: str


FORMATS: dict[str, ConverterFormat] = {
    f.name: f
    for f in (
        ConverterFormat("dinov3-original", "Meta DINOv3 .pth", "transformers directory (backbone.pretrained)",
                        "DINOv3 original checkpoint → DINOv3ViTModel.save_pretrained"),
        ConverterFormat("depth-anything-original", "Depth Anything V1/V2 .pth",
                        "transformers directory (depth.pretrained)",
                        "→ DepthAnythingForDepthEstimation (or --encoder-only: Dinov2Model)"),
        ConverterFormat("prompt-depth-anything-original", "Prompt Depth Anything .ckpt",
                        "transformers directory (depth.pretrained)",
                        "→ PromptDepthAnythingForDepthEstimation (or --encoder-only: Dinov2Model)"),
        ConverterFormat("dofa-original", "DOFA_ViT_*_e100.pth (authors)", ".pth of tensors (backbone.pretrained)",
                        "normalised DOFA v1 state dict for DOFABackbone.from_checkpoint"),
        ConverterFormat("dofa-torchgeo", "TorchGeo DOFA .pth", ".pth of tensors (backbone.pretrained)",
                        "normalised DOFA v1 state dict for DOFABackbone.from_checkpoint"),
        ConverterFormat("spectralmoe-official", "authors' mmseg .pth (SpectralMoE)", "rsmoe .safetensors checkpoint",
                        "adapter + Mask2Former head → rsmoe checkpoint; needs --config"),
    )
}
