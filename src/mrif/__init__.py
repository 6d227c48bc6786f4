"""MRIF: multi-resolution interest fusion for sequential recommendation (SIGIR 2020)."""

__version__ = "0.1.0"

PAD_ID = 0
"""Item id reserved for padding; real items are numbered 1..n_items (PROTOCOL.md rule 5)."""
