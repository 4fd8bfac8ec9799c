"""Fused ops: each module holds its plain-PyTorch reference and its backend dispatch."""
