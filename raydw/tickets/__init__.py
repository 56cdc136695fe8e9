"""Ticket methods and their masks in the store.

registry: each method (omp, imp, random, import) as a strategy that owns its identity in the cell hash, its store
          key and its mask maker; the one key encoder. Torch-free.
lookup:   masks already in the store, found by their key (the dry run and the pre-run input checks). Torch-free.
make:     stage 2 of a sweep: compute the masks the driver makes (omp, random, import) once, as masks rows.
"""
