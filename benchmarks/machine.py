"""What machine a benchmark ran on, printed next to every figure (the model card uses the same)."""

from __future__ import annotations

from hubcompress.pipeline.publish import cpu_name

__all__ = ["cpu_name"]
