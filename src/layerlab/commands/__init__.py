"""CLI sub-commands: one module per feature, each with ``register(subparsers)``."""
