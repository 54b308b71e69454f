"""MLOps with Cloud course helpers."""
