"""Decoders that turn backbone features into class logits."""
