class LauncherError(RuntimeError):
    """The local stack cannot start; the message says why and what to do."""
