"""Command-line drivers. Configs (ml_collections) stop here: below, library code takes plain values."""
