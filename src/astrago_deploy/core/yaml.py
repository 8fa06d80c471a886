"""All YAML of the task suite: the only module that imports PyYAML or ruamel.

Three ways in and out, each for one kind of file:

* Reading what Kubernetes reads (`load`, `load_all`, `read`, `read_all`, `read_mapping`):
  rendered manifests, chart files, repository indexes, values. Kubernetes, kubectl and helm
  read YAML through sigs.k8s.io/yaml (go-yaml v2, then JSON), whose plain scalars differ from
  PyYAML's YAML 1.1: a bare `=` is a string (PyYAML fails on it, pyyaml#89), `1e3`, `0o17` and
  `08` are numbers, `y`/`n` are booleans, timestamps and `1:20` stay strings, and mapping keys
  become strings. The loader resolves plain scalars by go-yaml's rules, on libyaml's parser
  where it is available.
* Editing the files people write (`load_for_edit` -> `EditedFile`): ruamel's round trip keeps
  comments, key order and quoting, and the file keeps its line endings (LF or CRLF).
* Writing YAML that tools read back (`dump`, `dump_all`): every string that YAML 1.1, YAML 1.2,
  go-yaml v2 (apiserver, helm) or go-yaml v3 (kustomize) could read as something other than that
  string is quoted, so what is reviewed in `rendered/` is what is deployed.

Every failure to parse is a `YamlError` naming the file and line; text that is not UTF-8 is a
`FileAccessError` (core.files) naming them too.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml as pyyaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import ConstructorError as RuamelConstructorError
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import YAMLError as RuamelError
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarstring import PlainScalarString

from astrago_deploy.core import files
from astrago_deploy.core.errors import ConfigError, YamlError

__all__ = [
    "CommentedMap",
    "CommentedSeq",
    "EditedFile",
    "YamlError",
    "YamlNode",
    "ambiguous",
    "compose_all",
    "dump",
    "dump_all",
    "first_line",
    "line_ending",
    "load",
    "load_all",
    "load_for_edit",
    "parse_for_edit",
    "read",
    "read_all",
    "read_mapping",
    "read_text",
]

Source = str | Path

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
# Never a real node's tag: a resolver answer that makes the emitter quote a string.
_AMBIGUOUS = "tag:astrago.invalid,2026:ambiguous-string"


def first_line(text: str) -> str:
    """The first line of a (YAML parser's multi-line) message."""
    return text.strip().splitlines()[0] if text.strip() else text


# --- go-yaml's plain scalars ------------------------------------------------------------
#
# The rules of go-yaml v2's resolve() (sigs.k8s.io/yaml's fork), checked against the pinned
# kubectl (`kubectl annotate --local -o json`): words from one table, then, for scalars that
# start with a sign or digit, Go's ParseInt(base 0) and a float pattern after removing every
# `_`. Timestamps resolve but decode as strings into untyped values, so they stay strings.

_TRUE_WORDS = ("y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE")
_FALSE_WORDS = ("n", "N", "no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE")
# `.inf` spellings -> whether positive.
_INFINITY_WORDS = {f"{sign}.{word}": sign != "-" for sign in ("", "+", "-") for word in ("inf", "Inf", "INF")}
_NAN_WORDS = (".nan", ".NaN", ".NAN")
_WORD_TAGS: dict[str, str] = {
    **dict.fromkeys(_TRUE_WORDS + _FALSE_WORDS, _BOOL),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), _NULL),
    **dict.fromkeys((*_INFINITY_WORDS, *_NAN_WORDS), _FLOAT),
    "<<": _MERGE,
}
_GO_INT = re.compile(r"[-+]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_GO_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_DOT_FLOAT = re.compile(r"\.[0-9]+(?:[eE][-+]?[0-9]+)?")


def _plain_tag(value: str) -> str:
    """The tag go-yaml v2 gives a plain (unquoted, untagged) scalar."""
    word = _WORD_TAGS.get(value)
    if word is not None:
        return word
    first = value[0]
    if first in "+-0123456789":
        digits = value.replace("_", "")
        if _GO_INT.fullmatch(digits):
            return _INT
        if _GO_FLOAT.fullmatch(digits):
            return _FLOAT
    elif first == "." and _DOT_FLOAT.fullmatch(value):
        return _FLOAT
    return _STR


def _go_int(text: str) -> int:
    digits = text.replace("_", "")
    sign = -1 if digits.startswith("-") else 1
    body = digits.lstrip("+-")
    prefix = body[:2].lower()
    if prefix in ("0x", "0o", "0b"):
        return sign * int(body[2:], {"0x": 16, "0o": 8, "0b": 2}[prefix])
    if len(body) > 1 and body.startswith("0"):
        return sign * int(body, 8)
    return sign * int(body)


def _go_float(text: str) -> float:
    if text in _INFINITY_WORDS:
        return math.inf if _INFINITY_WORDS[text] else -math.inf
    if text in _NAN_WORDS:
        return math.nan
    return float(text.replace("_", ""))


def _json_key(key: Any, node: pyyaml.Node) -> Any:
    """A mapping key as sigs.k8s.io/yaml passes it on: JSON object keys are strings."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        if math.isnan(key):
            return ".nan"
        if math.isinf(key):
            return ".inf" if key > 0 else "-.inf"
        return repr(key).removesuffix(".0")
    if key is None:
        raise pyyaml.constructor.ConstructorError(
            None, None, "a null mapping key (Kubernetes and helm reject it)", node.start_mark
        )
    return key


class _KubeResolver(pyyaml.resolver.BaseResolver):
    def resolve(self, kind: type[pyyaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is pyyaml.ScalarNode and implicit[0]:
            return _plain_tag(value)
        return str(super().resolve(kind, value, implicit))  # type: ignore[no-untyped-call]


class _KubeConstructor(pyyaml.constructor.SafeConstructor):
    def construct_go_int(self, node: pyyaml.ScalarNode) -> int:
        try:
            return _go_int(str(self.construct_scalar(node)))
        except ValueError:  # only an explicit `!!int` on something else gets here
            raise pyyaml.constructor.ConstructorError(None, None, "not an integer", node.start_mark) from None

    def construct_go_float(self, node: pyyaml.ScalarNode) -> float:
        try:
            return _go_float(str(self.construct_scalar(node)))
        except ValueError:  # only an explicit `!!float` on something else gets here
            raise pyyaml.constructor.ConstructorError(None, None, "not a number", node.start_mark) from None

    def construct_go_bool(self, node: pyyaml.ScalarNode) -> bool:
        return str(self.construct_scalar(node)) in _TRUE_WORDS

    def construct_merge_word(self, node: pyyaml.ScalarNode) -> str:
        # `<<` merges only as a key; elsewhere go-yaml reads it as the string.
        return str(self.construct_scalar(node))

    def construct_object(self, node: pyyaml.Node, deep: bool = False) -> Any:
        # An explicit tag on the wrong kind of node (`!!set [1]`, `!!timestamp x`) makes PyYAML's
        # own constructors fail with a bare TypeError or AttributeError: report it at the node.
        try:
            return super().construct_object(node, deep=deep)
        except pyyaml.YAMLError:
            raise
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            raise pyyaml.constructor.ConstructorError(
                None, None, f"cannot read this {node.tag.rsplit(':', 1)[-1]} value ({exc})", node.start_mark
            ) from exc

    def construct_mapping(self, node: pyyaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # Keys become strings before they meet in a dict: `1:` and `y:` (true) are two keys.
        if not isinstance(node, pyyaml.MappingNode):  # `!!map [1]`, `!!set [1]`
            raise pyyaml.constructor.ConstructorError(
                None, None, f"expected a mapping, but found a {node.id}", node.start_mark
            )
        self.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _json_key(self.construct_object(key_node, deep=deep), key_node)
            if not isinstance(key, Hashable):
                raise pyyaml.constructor.ConstructorError(None, None, "an unhashable mapping key", key_node.start_mark)
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


_KubeConstructor.yaml_constructors = {
    **pyyaml.constructor.SafeConstructor.yaml_constructors,
    _INT: _KubeConstructor.construct_go_int,
    _FLOAT: _KubeConstructor.construct_go_float,
    _BOOL: _KubeConstructor.construct_go_bool,
    _MERGE: _KubeConstructor.construct_merge_word,
}

if pyyaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _KubeLoader(CParser, _KubeConstructor, _KubeResolver):
        def __init__(self, stream: str | bytes) -> None:
            CParser.__init__(self, stream)
            _KubeConstructor.__init__(self)
            _KubeResolver.__init__(self)

else:  # pragma: no cover - PyYAML built without libyaml

    class _KubeLoader(  # type: ignore[no-redef]
        pyyaml.reader.Reader,
        pyyaml.scanner.Scanner,
        pyyaml.parser.Parser,
        pyyaml.composer.Composer,
        _KubeConstructor,
        _KubeResolver,
    ):
        def __init__(self, stream: str | bytes) -> None:
            pyyaml.reader.Reader.__init__(self, stream)
            pyyaml.scanner.Scanner.__init__(self)
            pyyaml.parser.Parser.__init__(self)
            pyyaml.composer.Composer.__init__(self)
            _KubeConstructor.__init__(self)
            _KubeResolver.__init__(self)


# --- errors -----------------------------------------------------------------------------


def _yaml_error(source: Source, exc: Exception, text: str = "") -> YamlError:
    """A parser's exception (PyYAML's or ruamel's) as a one-line YamlError at its position.

    Parsers print several lines (a snippet with a caret, ruamel's help links): only the problem
    and what it was doing are kept. A reader error (a forbidden character) has an offset, not a mark.
    """
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    reason = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
    context = getattr(exc, "context", None)
    if context and getattr(exc, "problem", None):
        reason = f"{reason} ({first_line(str(context))})"
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    position = getattr(exc, "position", None)
    if mark is None and isinstance(position, int) and text:
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
    return YamlError(source, line, column, first_line(str(reason)))


def _decode(source: Source, data: bytes) -> str:
    # Not UTF-8 is a FileAccessError naming file and line, as for every text file we read.
    return files.decode_text(data, source, keep_line_endings=True)


def read_text(path: Path) -> str:
    """A file's text as UTF-8, line endings kept; undecodable bytes and other read failures are
    a FileAccessError (a missing file stays FileNotFoundError)."""
    return _decode(path, files.read_bytes(path))


# --- reading what Kubernetes reads ------------------------------------------------------


def load(text: str | bytes, source: Source = "<string>") -> Any:
    """The one document in `text` (None when empty), read as Kubernetes reads it."""
    if isinstance(text, bytes):
        text = _decode(source, text)
    loader = _KubeLoader(text)
    try:
        return loader.get_single_data()
    except pyyaml.YAMLError as exc:
        raise _yaml_error(source, exc, text) from exc
    finally:
        loader.dispose()


def load_all(text: str | bytes, source: Source = "<string>") -> list[Any]:
    """Every document of a stream (empty ones as None), read as Kubernetes reads them."""
    if isinstance(text, bytes):
        text = _decode(source, text)
    loader = _KubeLoader(text)
    documents = []
    try:
        while loader.check_data():  # type: ignore[no-untyped-call]
            documents.append(loader.get_data())
    except pyyaml.YAMLError as exc:
        raise _yaml_error(source, exc, text) from exc
    finally:
        loader.dispose()
    return documents


def read(path: Path) -> Any:
    """The one document in the file at `path`."""
    return load(read_text(path), path)


def read_all(path: Path) -> list[Any]:
    """Every document in the file at `path`."""
    return load_all(read_text(path), path)


def read_mapping(path: Path, missing_ok: bool = False) -> dict[str, Any]:
    """The mapping in `path` (empty for an empty file, or a missing one with `missing_ok`)."""
    try:
        text = read_text(path)
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise ConfigError(f"{path} does not exist") from None
    data = load(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__}")
    return data


# --- composed nodes: what was written, and where ---------------------------------------


@dataclass(eq=False)
class YamlNode:
    """A node as written, before values are built: a check that must point at a line (the secret
    scan) walks these. An alias is the very node its anchor names (so a walk may meet a node
    twice, or a node inside itself); `tag` is the resolved tag's last part (`str`, `int`, `float`,
    `bool`, `null`) or an explicit tag as written."""

    kind: str  # "scalar", "mapping" or "sequence"
    line: int  # 1-based
    text: str = ""  # a scalar's content
    tag: str = ""
    pairs: list[tuple[YamlNode, YamlNode]] = field(default_factory=list)
    items: list[YamlNode] = field(default_factory=list)


def _short_tag(tag: str) -> str:
    return tag.rsplit(":", 1)[-1] if tag.startswith("tag:yaml.org,2002:") else tag


def _as_node(node: pyyaml.Node, built: dict[int, YamlNode]) -> YamlNode:
    done = built.get(id(node))
    if done is not None:
        return done
    line = node.start_mark.line + 1
    if isinstance(node, pyyaml.ScalarNode):
        converted = YamlNode("scalar", line, str(node.value), _short_tag(node.tag))
        built[id(node)] = converted
        return converted
    converted = YamlNode("mapping" if isinstance(node, pyyaml.MappingNode) else "sequence", line)
    built[id(node)] = converted  # before the children: an alias inside its own anchor ends here
    if isinstance(node, pyyaml.MappingNode):
        converted.pairs = [(_as_node(key, built), _as_node(value, built)) for key, value in node.value]
    else:
        converted.items = [_as_node(item, built) for item in node.value]
    return converted


def compose_all(text: str, source: Source = "<string>") -> list[YamlNode]:
    """Every document of `text` as composed nodes, with their lines (see `YamlNode`)."""
    loader = _KubeLoader(text)
    documents: list[YamlNode] = []
    built: dict[int, YamlNode] = {}
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                documents.append(_as_node(node, built))
    except pyyaml.YAMLError as exc:
        raise _yaml_error(source, exc, text) from exc
    finally:
        loader.dispose()
    return documents


# --- writing what tools read back -------------------------------------------------------

_ANY_CASE_WORDS = frozenset(("y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"))
# Go's ParseFloat takes these in any case, and a YAML 1.1 or 1.2 reader takes some of them.
_SPECIAL_FLOAT = re.compile(r"[-+]?\.?(?:inf|infinity|nan)", re.IGNORECASE)
# go-yaml's timestamp layouts allow one-digit months and days (`2006-1-2`).
_TIMESTAMP_LIKE = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt ].*)?")


def ambiguous(value: str) -> bool:
    """Whether some YAML reader we feed (1.1, 1.2, go-yaml v2 or v3) reads the plain scalar
    `value` as anything but this string; PyYAML's own 1.1 rules are checked by the dumper."""
    return (
        value == ""
        or value.lower() in _ANY_CASE_WORDS
        or _plain_tag(value) != _STR
        or _SPECIAL_FLOAT.fullmatch(value) is not None
        or _TIMESTAMP_LIKE.fullmatch(value) is not None
    )


_BaseDumper: type = getattr(pyyaml, "CSafeDumper", pyyaml.SafeDumper)


class _QuotingDumper(_BaseDumper):  # type: ignore[misc]
    """PyYAML's safe dumper, whose resolver also calls every `ambiguous` string non-plain.

    The emitter writes a string plain only when resolving the plain text gives back the
    string tag; answering `_AMBIGUOUS` for ambiguous strings makes it quote them.
    """

    def resolve(self, kind: type[pyyaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
        tag = str(super().resolve(kind, value, implicit))
        if kind is pyyaml.ScalarNode and implicit[0] and tag == _STR and ambiguous(value):
            return _AMBIGUOUS
        return tag


def dump(data: Any, *, sort_keys: bool = False) -> str:
    """One document as block YAML, UTF-8 text kept, long strings on one line."""
    text: str = pyyaml.dump(
        data,
        Dumper=_QuotingDumper,
        sort_keys=sort_keys,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 20,
    )
    return text


def dump_all(documents: Iterable[Any], *, sort_keys: bool = False) -> str:
    """A stream with each document preceded by `---`."""
    return "".join(f"---\n{dump(doc, sort_keys=sort_keys)}" for doc in documents)


# --- editing the files people write -----------------------------------------------------


class _QuotingRepresenter(RoundTripRepresenter):
    """ruamel's round-trip representer, quoting strings an edit adds when they are ambiguous.

    ruamel reads and writes YAML 1.2, where `yes` is a string; helm and Kubernetes read it as
    true. Strings that came from the file keep the style they had (see `_keep_plain`).
    """

    kept_plain_keys: frozenset[str] = frozenset()

    def represent_str(self, data: str) -> ScalarNode:
        if type(data) is str and ambiguous(data) and data not in self.kept_plain_keys:
            return self.represent_scalar(_STR, data, style="'")
        node: ScalarNode = super().represent_str(data)
        return node


_QuotingRepresenter.add_representer(str, _QuotingRepresenter.represent_str)


class _RoundTripConstructor(RoundTripConstructor):
    """ruamel's round-trip constructor, reporting a value it cannot build at its node (an explicit
    `!!int x` or `!!set [1]` otherwise escapes as a bare ValueError or TypeError)."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except RuamelError:
            raise
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            raise RuamelConstructorError(
                None, None, f"cannot read this {str(node.tag).rsplit(':', 1)[-1]} value ({exc})", node.start_mark
            ) from exc


def _round_trip(kept_plain_keys: frozenset[str] = frozenset()) -> YAML:
    handler = YAML(typ="rt")
    handler.Constructor = _RoundTripConstructor
    handler.preserve_quotes = True
    handler.indent(mapping=2, sequence=4, offset=2)
    handler.width = 4096
    handler.Representer = type("_Representer", (_QuotingRepresenter,), {"kept_plain_keys": kept_plain_keys})
    return handler


def _keep_plain(node: Any, keys: set[str]) -> None:
    """Mark the file's own ambiguous plain strings so that writing it back leaves them plain.

    Values are wrapped as `PlainScalarString` in place; keys cannot be, so they are collected
    (a new value equal to such a key is then written plain too, a rare imprecision).
    """
    if isinstance(node, CommentedMap):
        for key, value in node.items():
            if type(key) is str and ambiguous(key):
                keys.add(key)
            if type(value) is str and ambiguous(value):
                node[key] = PlainScalarString(value)
            else:
                _keep_plain(value, keys)
    elif isinstance(node, CommentedSeq):
        for index, value in enumerate(node):
            if type(value) is str and ambiguous(value):
                node[index] = PlainScalarString(value)
            else:
                _keep_plain(value, keys)


@dataclass
class EditedFile:
    """A round-trip document and the line ending of the file it came from.

    `text()` writes the document back with comments, key order and quoting kept; a CRLF file
    stays CRLF (ruamel reads and writes LF, and would mix the two in comments). Strings an
    edit adds are quoted when YAML 1.1 readers (helm, Kubernetes) would read them otherwise.
    """

    doc: CommentedMap
    newline: str = "\n"
    kept_plain_keys: frozenset[str] = frozenset()

    def text(self) -> str:
        out = io.StringIO()
        _round_trip(self.kept_plain_keys).dump(self.doc, out)
        text = out.getvalue()
        return text.replace("\n", self.newline) if self.newline != "\n" else text


def line_ending(text: str) -> str:
    """The line ending of `text`: that of its first line ("\n" when it has one line)."""
    first_break = text.find("\n")
    return "\r\n" if first_break > 0 and text[first_break - 1] == "\r" else "\n"


def parse_for_edit(text: str, source: Source = "<string>", expected: str = "a mapping") -> EditedFile:
    """A round-trip document of `text`, which must hold a mapping (an empty one when empty).

    `expected` describes the mapping in the error for anything else.
    """
    newline = line_ending(text)
    try:
        doc = _round_trip().load(text.replace("\r\n", "\n"))
    except RuamelError as exc:
        raise _yaml_error(source, exc, text) from exc
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise ConfigError(f"{source}: expected {expected}")
    keys: set[str] = set()
    _keep_plain(doc, keys)
    return EditedFile(doc, newline, frozenset(keys))


def load_for_edit(path: Path, expected: str = "a mapping") -> EditedFile:
    """The round-trip document of the file at `path` (see `parse_for_edit`)."""
    return parse_for_edit(read_text(path), path, expected)
