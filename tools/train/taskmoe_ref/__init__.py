"""PyTorch reference implementation of TaskMoE translation models (see docs/checkpoint-format.md)."""
