"""The catalog of parametrizations, one module per family."""
