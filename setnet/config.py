"""Typed config sections: frozen dataclasses whose fields carry their default and their rule.

A section is a ``@dataclass(frozen=True)`` subclass of `Section` whose fields are made with
`setting` (default, one-line meaning, allowed values). Each field is defined once: its
annotation is the type, `setting` holds the default and the rule, and everything else (checking,
YAML-style updates, ``to_dict``, the documentation table) is read from there. Building a section
checks and converts every field (``[8, 8]`` becomes ``(8, 8)``, ``1`` becomes ``1.0`` for a
float), so a section that exists is valid. `apply` updates a section from a nested mapping (one
YAML file or one ``--set``) and names the dotted key, the rule and the source in every error.

The model section (`setnet.models.config.ModelConfig`) and the training config of
`pipelines.config` are built from these.

Example:

>>> import dataclasses
>>> @dataclasses.dataclass(frozen=True)
... class Optim(Section):
...     epochs: int = setting(10, "epochs to train", min=1)
...     rate: float = setting(1e-3, "learning rate", min=0.0, min_exclusive=True)
>>> cfg = apply(Optim(), {"epochs": 3}, source="my.yaml")
>>> cfg.epochs, cfg.rate
(3, 0.001)
>>> apply(cfg, {"epoch": 3}, source="my.yaml")
Traceback (most recent call last):
...
setnet.config.ConfigError: unknown key 'epoch'; did you mean 'epochs'? in my.yaml
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Mapping


class ConfigError(ValueError):
    """A config value is invalid; the message names the key, the rule and where it came from."""


def setting(default: Any, doc: str = "", *, choices: tuple | None = None, min: float | None = None,
            max: float | None = None, min_exclusive: bool = False, max_exclusive: bool = False,
            item_min: int | None = None, variants: Mapping[str, type] | None = None):
    """A section field: its default, its meaning and its allowed values.

    Args:
        default: the default value (tuples for lists; a dict is copied for each instance).
        doc: one line saying what the key does (shown in the documentation table).
        choices: the allowed values.
        min, max: bounds for numbers; ``min_exclusive`` / ``max_exclusive`` make them strict.
        item_min: lower bound for each item of an integer list.
        variants: for a list of tagged sections (``tuple[Block, ...]``): ``{kind: section class}``,
            the item's ``kind`` key picks the class.
    """
    meta = {"doc": doc, "choices": choices, "min": min, "max": max, "min_exclusive": min_exclusive,
            "max_exclusive": max_exclusive, "item_min": item_min, "variants": variants}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=meta)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def where(source: str | None) -> str:
    return f" in {source}" if source else ""


def suggest(key: str, valid) -> str:
    """'; did you mean X?' naming the closest valid keys (all of them when several are equally close)."""
    scored = sorted(((difflib.SequenceMatcher(None, key, v).ratio(), v) for v in valid), key=lambda t: -t[0])
    if not scored or scored[0][0] < 0.5:
        return ""
    best = [repr(v) for r, v in scored if r == scored[0][0]]
    return f"; did you mean {' or '.join(best)}?"


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _nullable(tp) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    args = typing.get_args(tp)
    if (typing.get_origin(tp) in (typing.Union, types.UnionType)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def describe_type(tp) -> str:
    """'an integer', 'a list of integers or null', ... for error messages and the docs."""
    base, nullable = _nullable(tp)
    if base is bool:
        text = "true or false"
    elif base is int:
        text = "an integer"
    elif base is float:
        text = "a number"
    elif base is str:
        text = "a string"
    elif typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        text = {int: "a list of integers", float: "a list of numbers", str: "a name or a list of names"
                }.get(item, "a list of blocks")
    else:
        text = "a mapping"
    return text + (" or null" if nullable else "")


def _convert(name: str, value: Any, tp, meta: Mapping[str, Any]) -> Any:
    """`value` as the field's type, or a ConfigError '<name>: <rule>, got <value>'."""
    def fail(why: str):
        raise ConfigError(f"{name}: {why}")

    base, nullable = _nullable(tp)
    if value is None:
        if nullable:
            return None
        fail(f"must be {describe_type(tp)}, got null")
    if base is bool:
        if not isinstance(value, bool):
            fail(f"must be true or false, got {value!r}")
    elif base is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"must be an integer, got {value!r}")
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(f"must be a number, got {value!r}")
        value = float(value)
    elif base is str:
        if not isinstance(value, str):
            fail(f"must be a string, got {value!r}")
    elif typing.get_origin(base) is tuple:
        value = _convert_list(name, value, typing.get_args(base)[0], meta)
    elif dataclasses.is_dataclass(base):
        if isinstance(value, Mapping):
            value = apply(base(), value, path=name)
        elif not isinstance(value, base):
            fail(f"must be a mapping, got {value!r}")
    elif base is dict:
        if not isinstance(value, Mapping):
            fail(f"must be a mapping (key: value lines), got {value!r}")
        value = dict(value)
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        fail(f"must be one of {', '.join(map(str, choices))}, got {value!r}{suggest(str(value), choices)}")
    if base in (int, float):
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and (value < lo or (meta.get("min_exclusive") and value == lo)):
            fail(f"must be {'>' if meta.get('min_exclusive') else '>='} {lo}, got {value!r}")
        if hi is not None and (value > hi or (meta.get("max_exclusive") and value == hi)):
            fail(f"must be {'<' if meta.get('max_exclusive') else '<='} {hi}, got {value!r}")
    return value


def _convert_list(name: str, value: Any, item_type, meta: Mapping[str, Any]) -> tuple:
    variants = meta.get("variants")
    if item_type is str and isinstance(value, str):
        value = [value]  # one name stands for a list of one (target_column: y)
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
        what = "a non-empty list of blocks" if variants else describe_type(tuple[item_type, ...])
        raise ConfigError(f"{name}: must be {what}, got {value!r}")
    if variants:
        if not value:
            raise ConfigError(f"{name}: must be a non-empty list of blocks, got []")
        return tuple(_variant(f"{name}[{i}]", item, variants) for i, item in enumerate(value))
    out = []
    if item_type is str:
        bad = [item for item in value if not isinstance(item, str) or not item]
        if bad:
            raise ConfigError(f"{name}: must be {describe_type(tuple[str, ...])}, got item {bad[0]!r}")
        if len(set(value)) != len(value):
            raise ConfigError(f"{name}: names must differ, got {list(value)}")
        return tuple(value)
    for item in value:
        ok = isinstance(item, int) if item_type is int else isinstance(item, (int, float))
        if isinstance(item, bool) or not ok:
            raise ConfigError(f"{name}: must be {describe_type(tuple[item_type, ...])}, got item {item!r}")
        lo = meta.get("item_min")
        if lo is not None and item < lo:
            raise ConfigError(f"{name}: items must be {'positive' if lo == 1 else f'>= {lo}'}, got {item!r}")
        out.append(item_type(item))
    return tuple(out)


def _variant(name: str, item: Any, variants: Mapping[str, type]):
    """One item of a tagged list: a section instance, or a mapping whose ``kind`` picks the class."""
    if any(isinstance(item, cls) for cls in variants.values()):
        return item
    if not isinstance(item, Mapping):
        raise ConfigError(f"{name}: each block must be a mapping like {{kind: {next(iter(variants))}, units: 64}}, "
                          f"got {item!r}")
    kind = item.get("kind", next(iter(variants)))
    if kind not in variants:
        raise ConfigError(f"{name}.kind: must be one of {', '.join(variants)}, got {kind!r}"
                          f"{suggest(str(kind), variants)}")
    cls = variants[kind]
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in item:
        if key not in valid:
            other = [k for k, c in variants.items() if k != kind and key in {f.name for f in dataclasses.fields(c)}]
            hint = f"; it belongs to {other[0]!r} blocks" if other else suggest(str(key), valid)
            raise ConfigError(f"{name}: unknown key {key!r} for a {kind!r} block (valid keys: "
                              f"{', '.join(valid)}){hint}")
    return apply(cls(), item, path=name)


@dataclasses.dataclass(frozen=True)
class Section:
    """Base of config sections: every field is checked and converted when the section is built."""

    def __post_init__(self):
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _convert(f.name, getattr(self, f.name), hints[f.name], f.metadata))
        self.check()

    def check(self) -> None:
        """Rules across keys; raise ConfigError('<key>: <rule>') (the key relative to this section)."""

    def summary(self) -> str:
        """A few words for the documentation table (default: the fields as a dict)."""
        return str(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts and lists (for YAML, JSON and MLflow params)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value):
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def sections_with(cls, key: str, prefix: str = "") -> list[str]:
    """Dotted paths of every field named ``key`` below the top level (e.g. 'epochs' -> ['train.epochs'])."""
    out = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        path = _join(prefix, f.name)
        base, _ = _nullable(hints[f.name])
        if dataclasses.is_dataclass(base):
            out += sections_with(base, key, path)
        elif f.name == key and prefix:
            out.append(path)
    return out


def apply(section: Section, data: Any, *, source: str | None = None, path: str = "", root: type | None = None):
    """`section` with the keys of a nested mapping replaced, each checked against its field.

    Nested sections are updated key by key; lists (of numbers or of blocks) are replaced whole.

    Args:
        section: the section to start from.
        data: a mapping of keys of `section` (values may be nested mappings).
        source: where the mapping came from (a file or ``--set KEY=VALUE``), named in errors.
        path: the dotted key of `section` (named in errors).
        root: the top-level section class: an unknown key that exists in another section is
            answered with that key's full path ("did you mean 'train.epochs'?").

    Returns:
        A new section.

    Raises:
        ConfigError: unknown key (with the nearest valid one), wrong type or value, or a rule
            across keys broken; the message names the dotted key and `source`.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{repr(path) if path else 'the top level'} must be a mapping, got {data!r}{where(source)}")
    fields = {f.name: f for f in dataclasses.fields(section)}
    hints = _hints(type(section))
    updates = {}
    for key, value in data.items():
        dotted = _join(path, str(key))
        if key not in fields:
            # A valid key put in the wrong section is a commoner slip than a typo, and an exact
            # name elsewhere is a surer hint than a fuzzy match here.
            homes = [h for h in sections_with(root, str(key)) if h != dotted] if root else []
            near = (f"; did you mean {' or '.join(repr(h) for h in homes)}?" if homes
                    else suggest(str(key), fields))
            raise ConfigError(f"unknown key {dotted!r}{near}{where(source)}")
        base, _ = _nullable(hints[key])
        if dataclasses.is_dataclass(base) and (value is None or isinstance(value, Mapping)):
            updates[key] = apply(getattr(section, key), value or {}, source=source, path=dotted, root=root)
        elif dataclasses.is_dataclass(base):
            raise ConfigError(f"{dotted!r} must be a mapping, got {value!r}{where(source)}")
        else:
            updates[key] = value
    try:
        return dataclasses.replace(section, **updates)
    except ConfigError as e:
        raise ConfigError(f"{_join(path, str(e))}{where(source)}") from None


def reference_rows(cls, prefix: str = "") -> list[tuple[str, str, str, str, str]]:
    """(dotted key, type, default, allowed, meaning) for every field, nested sections flattened."""
    rows = []
    hints = _hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        path = _join(prefix, f.name)
        base, nullable = _nullable(hints[f.name])
        if dataclasses.is_dataclass(base):
            rows += reference_rows(base, path)
            continue
        rows.append((path, type_name(hints[f.name]), format_value(getattr(defaults, f.name)),
                     describe_rule(f.metadata, nullable), f.metadata.get("doc", "")))
    return rows


def type_name(tp) -> str:
    """'int', 'float list', 'list of blocks', ... (None left out: the rule column says 'null')."""
    base, _ = _nullable(tp)
    if typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        return f"{item.__name__} list" if item in (int, float, str) else "list of blocks"
    return {dict: "mapping"}.get(base, getattr(base, "__name__", str(base)))


def format_value(value) -> str:
    """A default as written in YAML: null, true, [128], `text`, {rotate: true}."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, Section):
        return value.summary()
    if isinstance(value, (tuple, list)):
        if value and all(isinstance(v, Section) for v in value):
            return ", ".join(format_value(v) for v in value)
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "`{" + ", ".join(f"{k}: {_plain_yaml(v)}" for k, v in value.items()) + "}`"
    return str(value)


def _plain_yaml(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_plain_yaml(v) for v in value) + "]"
    return str(value)


def describe_rule(meta: Mapping[str, Any], nullable: bool = False) -> str:
    """'≥ 1; ≤ 65536', 'adam, adamw, sgd', 'non-empty', ... for the documentation table."""
    parts = []
    if meta.get("choices"):
        parts.append(", ".join(map(str, meta["choices"])))
    if meta.get("min") is not None:
        parts.append(f"{'>' if meta.get('min_exclusive') else '≥'} {_number(meta['min'])}")
    if meta.get("max") is not None:
        parts.append(f"{'<' if meta.get('max_exclusive') else '≤'} {_number(meta['max'])}")
    if meta.get("item_min") is not None:
        parts.append(f"items ≥ {meta['item_min']}")
    if meta.get("variants"):
        parts.append("non-empty")
    if nullable:
        parts.append("null")
    return "; ".join(parts)


def _number(x) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
