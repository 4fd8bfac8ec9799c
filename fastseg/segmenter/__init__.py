"""`fastseg.Segmenter`: images in, a label per pixel out, as fast as the device allows.

    seg = fastseg.Segmenter()            # the packaged default model (CamVid, 11 classes)
    seg = fastseg.Segmenter("lraspp_mobilenet_v3_large", num_classes=21)   # or a model, or a saved file
    result = seg.predict(image)          # uint8 HWC numpy / PIL / list of those / torch [N,3,H,W]
    result.labels, result.confidence, result.timings
    for result in seg.stream(frames): ...    # video: this loop's buffers reused from frame to frame
    seg = fastseg.Segmenter(tiling=Tiling(size=(512, 512)), tta=TTA(flip=True))

The parts, one module each: `inputs` (what is accepted, split into same-size groups and handed back
in the caller's structure and array kind), `runtimes` (what runs the network) and `choice` (which
one, and why), `options` and `augment` (tiling and test-time augmentation, as functions of the
network), `onnx_cache` (exported graphs kept on disk), `model_spec` (what a model argument names,
shared with the command line), `pipeline` (the Segmenter that puts them together) and `cuda_frames`
(how it runs frames on a CUDA device: one wait per frame, the caller's stream, CUDA graphs).
"""
from .model_spec import ResolvedModel, resolve_model
from .options import TTA, Tiling
from .pipeline import SegmentationResult, Segmenter
from .runtimes import Runtime

__all__ = ["Segmenter", "SegmentationResult", "Tiling", "TTA", "Runtime", "resolve_model", "ResolvedModel"]
