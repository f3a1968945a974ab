"""Reading the YAML files people write (site, device profiles), refusing what YAML would guess.

``yaml.safe_load`` is too forgiving for a file whose values decide whether an alarm is raised:

- a repeated mapping key silently keeps the last value, so a set point written twice is read as
  whichever comes last: refused here, with both lines;
- YAML 1.1 reads ``no``, ``on``, ``off``, ``yes`` as booleans, so ``id: no`` becomes ``False``:
  here only ``true`` and ``false`` are booleans (as in YAML 1.2) and the rest stay the words
  people wrote (a boolean field still takes ``yes``/``no``: pydantic reads those words);
- aliases are expanded by whatever walks the result, so a few lines of nested aliases ("billion
  laughs") make validation run for ever: the expanded size is counted on the node graph first,
  and a self-referencing alias is refused;
- a file that is not UTF-8 (a site file saved as GBK by an office editor) is named as such, with
  the byte offset, instead of a decoding traceback.

Numbers where text is meant (``phone: 13800000101``) are not turned back into text: YAML has
already changed them (``05661234567`` is an octal number to YAML 1.1), so the models refuse them
and :func:`firewatch.profiles.describe_validation_error` says to quote the value.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode

#: nodes a document may hold once its aliases are expanded; a 2,000-device county is ~50,000
MAX_EXPANDED_NODES = 1_000_000
_BOOL_TAG = "tag:yaml.org,2002:bool"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class UnreadableFile(ValueError):
    """A file that is not the YAML it should be; the message says where and why."""


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans, no duplicate keys and bounded alias expansion."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def get_single_node(self) -> Node | None:
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, {}, set())
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        # own keys only: a key given beside a merge (<<: *defaults) overrides it, as meant
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                earlier = first_line.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: the base constructor says so
                continue
            if earlier != key_node.start_mark.line + 1:
                raise ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"key {key!r} appears twice (first on line {earlier}); YAML would keep only "
                    "the last",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _expanded_size(node: Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Nodes under ``node`` with every alias expanded, counted once per distinct node."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    if id(node) in open_nodes:
        raise ConstructorError(
            None, None, "an alias refers to a node that contains it", node.start_mark
        )
    size = 1
    if isinstance(node, SequenceNode | MappingNode):
        open_nodes.add(id(node))
        children = (
            node.value
            if isinstance(node, SequenceNode)
            else [n for pair in node.value for n in pair]
        )
        for child in children:
            size += _expanded_size(child, sizes, open_nodes)
            if size > MAX_EXPANDED_NODES:
                raise ConstructorError(
                    None,
                    None,
                    f"aliases expand to more than {MAX_EXPANDED_NODES:,} values",
                    node.start_mark,
                )
        open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


def load_yaml(path: Path) -> Any:
    """The one YAML document in ``path``; :class:`UnreadableFile` says why it cannot be used."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UnreadableFile(
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} (line "
            f"{line}) is not UTF-8; save the file as UTF-8 (GBK is the usual other one)"
        ) from None
    loader = _Loader(text)
    loader.name = str(path)  # error marks name the file rather than "<unicode string>"
    try:
        return loader.get_single_data()
    except RecursionError:
        raise UnreadableFile("nested too deeply") from None
    except yaml.YAMLError as exc:
        raise UnreadableFile(f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()
