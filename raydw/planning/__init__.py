"""The spec against the store: what runs, in what order, at what cost, and where a sweep stands."""
