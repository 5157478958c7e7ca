"""Subcommands of the ``atacformer`` CLI, one module per area (see ``atacformer.cli``)."""
