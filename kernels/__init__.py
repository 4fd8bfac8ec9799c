"""Triton kernels, one file per kernel family; installed as fastseg.kernels."""
