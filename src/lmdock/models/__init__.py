"""Model store, registry, manager and the embedded default model."""
