"""The results store's errors, apart so that the store's helpers (raydw.remote) raise them without importing it."""


class StoreError(RuntimeError):
    """A store that cannot be read or written as asked: one sentence naming the store (exit 3 from the CLI)."""


class StoreKeyError(StoreError, ValueError):
    """A key (an id a user typed) that is not an id: it would name a path outside its table's folder."""


class StorePathError(StoreError):
    """The store's path itself is unusable (a symlink loop, a file, a dangling link): the user must fix it."""
