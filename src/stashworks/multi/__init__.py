"""The batch layer: :class:`MultiProcessStash` and its executors."""
