"""MPerS (arXiv 2605.10769): frozen DINOv3 + LDPE + DilateFormer adapters, guided by MLLM captions (DMTE + LQGA).

Modules: :mod:`.dilated_attention` (sliding-window dilated attention), :mod:`.dilateformer` (the adapter block and
its MHSA ablation), :mod:`.ldpe` (detail CNN), :mod:`.neck` (DINOv3 taps → pyramid), :mod:`.dmte` (linguistic
attention + DMTE), :mod:`.lqga` (text-guided channel re-weighting), :mod:`.model` (:class:`MPerS`). Its
decoders are ordinary decode heads (:mod:`rsmoe.models.heads`: ``unet``, ``semantic_fpn``, ``pixelup``).
"""
from .dilated_attention import DilatedAttention, dilated_attention, dilated_attention_unfold
from .dilateformer import DilateAdapter, DilateBlock, MultiHeadSelfAttention
from .dmte import DMTE, DMTEOutput, LinguisticAttention
from .ldpe import LDPE
from .lqga import LQGA
from .model import DECODER_HEADS, EVAL_CAPTIONS, MPerS
from .neck import TapPyramidNeck, mpers_default_taps

__all__ = [
    "DECODER_HEADS",
    "DMTE",
    "DMTEOutput",
    "EVAL_CAPTIONS",
    "DilateAdapter",
    "DilateBlock",
    "DilatedAttention",
    "LDPE",
    "LQGA",
    "LinguisticAttention",
    "MPerS",
    "MultiHeadSelfAttention",
    "TapPyramidNeck",
    "dilated_attention",
    "dilated_attention_unfold",
    "mpers_default_taps",
]
