"""Feature extractors: each returns its feature maps from fine to coarse."""
