"""YAML files validated by pydantic, with errors that name the file, the line and the reason.

Configuration and (later) remediation policy are both YAML documents checked by a pydantic
model. A bare `ValidationError` says *what* is wrong but not *where*; this module keeps the line
of every mapping key and sequence item so each error points at the line to fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigFileError(ValueError):
    """A configuration file that cannot be used, with one `path:line: reason` entry per problem."""

    def __init__(self, path: str | Path, problems: list[tuple[int | None, str]]):
        self.path = str(path)
        self.problems = problems
        lines = [f"{self.path}:{line}: {reason}" if line else f"{self.path}: {reason}" for line, reason in problems]
        super().__init__("\n".join(lines))


class _LineLoader(yaml.SafeLoader):
    """Safe loader that remembers the 1-based line of every key and item."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):  # `? [a]: 1` or `{{a: 1}: 2}`: an unhashable key (make fuzz)
            raise yaml.MarkedYAMLError(
                problem="a mapping key must be a plain value, not a list or mapping", problem_mark=key_node.start_mark
            )
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.MarkedYAMLError(
                problem=f"duplicate key {key!r} (first at line {seen[key]})", problem_mark=key_node.start_mark
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=True)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_index(node: yaml.Node | None, prefix: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map every path (tuple of keys / indexes) in the document to its line."""
    out = {} if out is None else out
    if node is None:
        return out
    out.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = prefix + (key_node.value,)
            out[path] = key_node.start_mark.line + 1
            _line_index(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[prefix + (i,)] = item.start_mark.line + 1
            _line_index(item, prefix + (i,), out)
    return out


MAX_FLOW_DEPTH = 100


def _flow_depth(text: str) -> int:
    """The deepest nesting of [ and { outside quotes (a rough, linear bound; configs nest a few levels)."""
    depth = deepest = 0
    quote = None
    for ch in text:
        if quote:
            if ch == quote or ch == "\n":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(depth - 1, 0)
    return deepest


def read_yaml(path: str | Path) -> tuple[Any, dict[tuple, int]]:
    """Parse a YAML file; returns the data and a path → line index. Syntax errors name the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(path, [(None, f"cannot read: {exc.strerror or exc}")]) from exc
    if _flow_depth(text) > MAX_FLOW_DEPTH:  # PyYAML is slow on deep flow nesting before it fails: refuse first
        raise ConfigFileError(path, [(None, f"invalid YAML: nested too deeply (more than {MAX_FLOW_DEPTH} levels)")])
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        raise ConfigFileError(path, [(line, f"invalid YAML: {exc.problem}")]) from exc
    except yaml.YAMLError as exc:
        raise ConfigFileError(path, [(None, f"invalid YAML: {exc}")]) from exc
    except RecursionError:  # found by the fuzz suite: "[" * 5000 crashed the loader
        raise ConfigFileError(path, [(None, "invalid YAML: nested too deeply")]) from None
    try:
        return data, _line_index(node)
    except RecursionError:
        raise ConfigFileError(path, [(None, "invalid YAML: nested too deeply")]) from None


def line_of(index: dict[tuple, int], loc: tuple) -> int | None:
    """The line of the deepest existing prefix of `loc` (a missing field points at its parent)."""
    for n in range(len(loc), -1, -1):
        line = index.get(tuple(loc[:n]))
        if line is not None:
            return line
    return None


def problems_from(exc: ValidationError, index: dict[tuple, int]) -> list[tuple[int | None, str]]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        name = ".".join(str(p) for p in loc) or "(document)"
        problems.append((line_of(index, loc), f"{name}: {err['msg']}"))
    return problems


def load_model(path: str | Path, model: type[M], overrides: dict | None = None) -> M:
    """Load `path` as YAML and validate it with `model`; `overrides` (already nested) win over the file."""
    data, index = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigFileError(path, [(1, "the document must be a mapping of settings")])
    if overrides:
        data = deep_merge(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(path, problems_from(exc, index)) from exc


def deep_merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
