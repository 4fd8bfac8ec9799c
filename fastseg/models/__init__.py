"""The model zoo: plain-PyTorch segmentation models, weight import and the inference rewrite.

    model = fastseg.models.create("deeplabv3_resnet50", num_classes=21)
    model = fastseg.models.from_torchvision(tv_model)     # also from_smp, from_transformers
    fastseg.models.save(model, "m.safetensors"); model = fastseg.models.load("m.safetensors")
    fast = fastseg.models.fuse(model)                     # BN folded, dropout gone, atrous convs marked
    model = fastseg.models.pretrained.load()              # the model packaged with fastseg (CamVid)

Every model has `forward_logits(x)` (logits at `model.output_stride`), `forward(x)` (upsampled to the
input like the source model) and `predict(x)` (labels through the fused upsample+argmax).
None of torchvision, segmentation-models-pytorch or transformers is needed to use the zoo.
"""
from . import pretrained
from .config import input_size
from .convert.smp import from_smp
from .convert.torchvision import from_torchvision
from .convert.transformers import from_transformers
from .io import WeightsMismatchError, load, save
from .registry import create, list_models, register_model
from .rewrite import fuse

__all__ = ["create", "list_models", "register_model", "from_torchvision", "from_smp", "from_transformers",
           "save", "load", "fuse", "WeightsMismatchError", "pretrained", "input_size"]
