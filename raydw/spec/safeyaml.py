"""The one YAML loader for user files (sweep specs): bounded in size, depth and alias expansion, no duplicate keys.

PyYAML's safe_load is safe against code execution, not against a hostile or damaged file: it reads any file (a
directory, /proc/self/mem, a FIFO that blocks), recurses once per nesting level (50,000 brackets: RecursionError
after seconds), expands aliases without limit (a nine-level alias bomb is a few hundred bytes that validation and
error messages then walk billions of times) and lets a repeated key silently replace the first. Each of those is
refused here with the file's name and, where YAML gives one, the line.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

MAX_BYTES = 1 << 20  # a spec is a few KB; the paper's grid is 3 KB
MAX_DEPTH = 50  # a spec nests about 6 levels; pydantic and repr recurse once per level
MAX_NODES = 100_000  # values once aliases are expanded (each use of an anchor counts its whole subtree again)
_MERGE = "tag:yaml.org,2002:merge"


class InputError(ValueError):
    """A user file that cannot be read as what it claims to be; the message names the file and the reason."""


def read_text(path: str | Path, what: str = "file", limit: int = MAX_BYTES) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes, or an InputError saying why not."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputError(f"{p}: no such {what}") from None
    except OSError as e:  # a symlink loop, a path through a file, a name too long
        raise InputError(f"{p}: cannot open the {what}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{p}: is a folder, not a {what}")
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block open() forever; a device has no end
        raise InputError(f"{p}: is not a regular file (a device, pipe or socket); give the {what} as a plain file")
    try:
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:  # /proc/self/mem (EIO), unreadable permissions
        raise InputError(f"{p}: cannot read the {what}: {e.strerror or e}") from None
    if len(data) > limit:
        raise InputError(f"{p}: larger than {limit // 1024} KiB; a {what} is a few KB (is this the right file?)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"{p}: not UTF-8 text (byte {e.start}, line {line}: {data[e.start:e.start + 1]!r}); "
                         "save it as UTF-8") from None


class _Loader(yaml.SafeLoader):
    """SafeLoader with a nesting bound while composing and duplicate keys refused while constructing."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:  # before PyYAML's own recursion gets deep enough to hit Python's limit
                raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            _refuse_duplicates(self, node)
        return super().construct_mapping(node, deep=deep)


def _refuse_duplicates(loader: _Loader, node: MappingNode) -> None:
    """A key written twice in one mapping: YAML says keys are unique; PyYAML keeps the last one without a word."""
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE or not isinstance(key_node, ScalarNode):
            continue  # `<<: *base` overrides are YAML's merge semantics, not duplicates
        key = loader.construct_object(key_node)
        if key in seen:
            raise ConstructorError("while reading a mapping", node.start_mark,
                                   f"duplicate key {str(key)[:60]!r} (first at line {seen[key] + 1}, again at line "
                                   f"{key_node.start_mark.line + 1}); each key may appear once", key_node.start_mark)
        seen[key] = key_node.start_mark.line


def _check_expansion(node, source: str) -> None:
    """Refuse a document whose values, aliases expanded, exceed MAX_NODES or MAX_DEPTH; costs one visit per node."""
    sizes: dict[int, int] = {}

    def size(n, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise InputError(f"{source}: nested more than {MAX_DEPTH} levels deep once its aliases are expanded")
        k = id(n)
        if k in sizes:
            return sizes[k]
        sizes[k] = MAX_NODES + 1  # a recursive alias (`&a [*a]`) reaches itself: infinite, so too large
        if isinstance(n, SequenceNode):
            total = 1 + sum(size(c, depth + 1) for c in n.value)
        elif isinstance(n, MappingNode):
            total = 1 + sum(size(a, depth + 1) + size(b, depth + 1) for a, b in n.value)
        else:
            total = 1
        sizes[k] = min(total, MAX_NODES + 1)
        return sizes[k]

    if size(node, 0) > MAX_NODES:
        raise InputError(f"{source}: more than {MAX_NODES:,} values once its YAML aliases (*name) are expanded; "
                         "an alias bomb, or a spec far larger than any sweep")


def load(path: str | Path, what: str = "file") -> Any:
    """The YAML document in `path`, read with every bound above. InputError for files that cannot be read,
    yaml.YAMLError (with a line) for text that is not valid YAML or repeats a key."""
    text = read_text(path, what)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, str(path))
        return loader.construct_document(node)
    finally:
        loader.dispose()
