"""Fine-tuning tools: losses that honour ignore_index, joint augmentation, a resumable loop."""
from .augment import (
    CameraJitter,
    ColorJitter,
    Compose,
    PasteClasses,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    ToTensor,
    eval_transform,
    train_transform,
)
from .loop import TrainResult, evaluate, load_checkpoint, save_atomic, train
from .losses import (
    CrossEntropyLoss,
    DistillationLoss,
    FocalLoss,
    OhemCrossEntropy,
    SoftmaxAverage,
    cross_entropy,
    distillation_kl,
    focal_loss,
    label_statistics,
    median_frequency_weights,
    ohem_cross_entropy,
)

__all__ = ["CameraJitter", "ColorJitter", "Compose", "CrossEntropyLoss", "DistillationLoss", "FocalLoss",
           "OhemCrossEntropy", "PasteClasses", "RandomCrop", "RandomHorizontalFlip", "RandomScale", "SoftmaxAverage",
           "ToTensor", "TrainResult", "cross_entropy", "distillation_kl", "eval_transform", "evaluate",
           "focal_loss", "label_statistics", "load_checkpoint", "median_frequency_weights",
           "ohem_cross_entropy", "save_atomic", "train", "train_transform"]
