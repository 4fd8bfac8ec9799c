"""Hugging Face transformers -> fastseg: SegformerForSemanticSegmentation (MiT-B0..B5 or any
configuration of the same family). Key names of transformers 5.x and of the 4.x layout are both read."""
from __future__ import annotations

from typing import Any

from torch import nn

from ..io import load_state_dict_checked
from ..registry import create
from ..zoo import SEGFORMER_DEFAULTS, SEGFORMER_VARIANTS
from ._keys import BN_FIELDS, read_state, rename_all

_S, _B = r"(\d+)", r"(\d+)"
BLOCK = rf"segformer\.stages\.{_S}\.blocks\.{_B}\."      # transformers 5.x
BLOCK_V4 = rf"segformer\.encoder\.block\.{_S}\.{_B}\."    # transformers 4.x
DST = r"backbone.stages.\1.blocks.\2."

RULES = [
    (r"segformer\.stages\.(\d+)\.patch_embeddings\.proj\.(weight|bias)", r"backbone.stages.\1.patch_embed.proj.\2"),
    (r"segformer\.stages\.(\d+)\.patch_embeddings\.layer_norm\.(weight|bias)",
     r"backbone.stages.\1.patch_embed.norm.\2"),
    (r"segformer\.stages\.(\d+)\.layer_norm\.(weight|bias)", r"backbone.stages.\1.norm.\2"),
    (BLOCK + r"layernorm_before\.(weight|bias)", DST + r"norm1.\3"),
    (BLOCK + r"layernorm_after\.(weight|bias)", DST + r"norm2.\3"),
    (BLOCK + r"attention\.([qkv])_proj\.(weight|bias)", DST + r"attn.\3_proj.\4"),
    (BLOCK + r"attention\.o_proj\.(weight|bias)", DST + r"attn.out_proj.\3"),
    (BLOCK + r"attention\.sequence_reduction\.sequence_reduction\.(weight|bias)", DST + r"attn.reduce.\3"),
    (BLOCK + r"attention\.sequence_reduction\.layer_norm\.(weight|bias)", DST + r"attn.reduce_norm.\3"),
    (BLOCK + r"mlp\.(fc1|fc2)\.(weight|bias)", DST + r"mlp.\3.\4"),
    (BLOCK + r"mlp\.dwconv\.dwconv\.(weight|bias)", DST + r"mlp.dwconv.\3"),
    # transformers 4.x layout
    (r"segformer\.encoder\.patch_embeddings\.(\d+)\.proj\.(weight|bias)", r"backbone.stages.\1.patch_embed.proj.\2"),
    (r"segformer\.encoder\.patch_embeddings\.(\d+)\.layer_norm\.(weight|bias)",
     r"backbone.stages.\1.patch_embed.norm.\2"),
    (r"segformer\.encoder\.layer_norm\.(\d+)\.(weight|bias)", r"backbone.stages.\1.norm.\2"),
    (BLOCK_V4 + r"layer_norm_1\.(weight|bias)", DST + r"norm1.\3"),
    (BLOCK_V4 + r"layer_norm_2\.(weight|bias)", DST + r"norm2.\3"),
    (BLOCK_V4 + r"attention\.self\.query\.(weight|bias)", DST + r"attn.q_proj.\3"),
    (BLOCK_V4 + r"attention\.self\.key\.(weight|bias)", DST + r"attn.k_proj.\3"),
    (BLOCK_V4 + r"attention\.self\.value\.(weight|bias)", DST + r"attn.v_proj.\3"),
    (BLOCK_V4 + r"attention\.output\.dense\.(weight|bias)", DST + r"attn.out_proj.\3"),
    (BLOCK_V4 + r"attention\.self\.sr\.(weight|bias)", DST + r"attn.reduce.\3"),
    (BLOCK_V4 + r"attention\.self\.layer_norm\.(weight|bias)", DST + r"attn.reduce_norm.\3"),
    (BLOCK_V4 + r"mlp\.dense1\.(weight|bias)", DST + r"mlp.fc1.\3"),
    (BLOCK_V4 + r"mlp\.dense2\.(weight|bias)", DST + r"mlp.fc2.\3"),
    (BLOCK_V4 + r"mlp\.dwconv\.dwconv\.(weight|bias)", DST + r"mlp.dwconv.\3"),
    # decode head
    (r"decode_head\.(?:linear_projections|linear_c)\.(\d+)\.proj\.(weight|bias)", r"head.proj.\1.\2"),
    (r"decode_head\.linear_fuse\.weight", "head.fuse.conv.weight"),
    (rf"decode_head\.batch_norm\.{BN_FIELDS}", r"head.fuse.bn.\1"),
    (r"decode_head\.classifier\.(weight|bias)", r"head.classifier.\1"),
]


def _describe(hf: Any) -> tuple[str, dict]:  # a transformers model, read by its attributes
    if type(hf).__name__ != "SegformerForSemanticSegmentation":
        raise TypeError(f"from_transformers expects SegformerForSemanticSegmentation, got {type(hf).__name__}")
    c = hf.config
    if c.hidden_act != "gelu" or not c.reshape_last_stage or c.num_channels != 3 or c.num_encoder_blocks != 4:
        raise ValueError("from_transformers: only gelu, 3 input channels, 4 stages and reshape_last_stage=True "
                         "are supported")
    eps = next(m.eps for m in hf.modules() if isinstance(m, nn.LayerNorm))
    encoder = dict(hidden_sizes=tuple(c.hidden_sizes), depths=tuple(c.depths), num_heads=tuple(c.num_attention_heads),
                   sr_ratios=tuple(c.sr_ratios), mlp_ratios=tuple(c.mlp_ratios), patch_sizes=tuple(c.patch_sizes),
                   strides=tuple(c.strides), layer_norm_eps=eps, decoder_channels=c.decoder_hidden_size)
    for variant, preset in SEGFORMER_VARIANTS.items():
        if {**SEGFORMER_DEFAULTS, **preset} == encoder:
            return f"segformer_{variant}", {"num_classes": c.num_labels}
    return "segformer", {"num_classes": c.num_labels, **{k: list(v) if isinstance(v, tuple) else v
                                                         for k, v in encoder.items()}}


def from_transformers(source, name: str | None = None, **kwargs) -> nn.Module:
    """A fastseg model with the weights of a Hugging Face SegformerForSemanticSegmentation (the
    model itself, or its state dict / a torch.save path with name="segformer_b0".."segformer_b5")."""
    if isinstance(source, nn.Module):
        name, inferred = _describe(source)
        kwargs = {**inferred, **kwargs}
        state = source.state_dict()
    else:
        if not name or not name.startswith("segformer"):
            raise ValueError("from_transformers with a state dict needs name= 'segformer_b0' .. 'segformer_b5'")
        state = read_state(source)
        if "num_classes" not in kwargs and "decode_head.classifier.bias" in state:
            kwargs["num_classes"] = state["decode_head.classifier.bias"].shape[0]
    model = create(name, **kwargs)
    load_state_dict_checked(model, rename_all(state, RULES), f"transformers {name} weights")
    return model.eval()
