"""Weight import from the libraries people train with: each module maps the source's state-dict keys
onto fastseg's module names (the weights themselves are copied unchanged)."""
