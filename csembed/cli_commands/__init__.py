"""Sub-commands of the ``csembed`` CLI that belong to no single engine."""
