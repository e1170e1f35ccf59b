"""Typed configs: dataclass fields that carry their help text and checks, and what is built from them.

One mechanism serves every config class (the trainers', the run's, the sampler's, the policies'):

* :func:`option` declares a field: default, help text, choices, a range, a command-line flag name.
* :class:`Config` checks every field when an instance is built (type, range, choices, finite numbers), then the
  class's own cross-field :meth:`Config.check`; a bad value raises one :class:`ConfigError` line that names the
  field, its flag and the valid values, the same from Python and from the command line.
* :func:`add_config_arguments` turns a config class into argparse flags (help, choices, lists ``24,28,32``,
  ranges ``LO,HI``); :meth:`Config.from_flat` builds a (nested) config from flat ``name: value`` pairs, the form
  both the flags and the YAML recipe files take (:func:`load_recipe`; TRL's ``TrlParser`` pattern: a recipe
  gives the values, flags override them).

A field whose type is a union of config classes (``policy: UPOConfig | ParallelConfig``) is chosen by a kind
name (``option(..., kinds={"upo": UPOConfig, ...})``); its flat key takes the kind and the chosen class's fields
take their own flat keys. Fields marked ``derived`` are filled by the code that uses the config (e.g. the MDM's
feature size): they are not flags, not recipe keys and not part of :meth:`Config.to_dict`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import types
import typing
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config value out of its type, range or choices (one line; names the option and its valid values)."""


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    default_factory: Any = MISSING,
    choices: typing.Iterable | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    length: int | None = None,
    flag: str | None = None,
    aliases: typing.Sequence[str] = (),
    kinds: dict[str, type] | None = None,
    derived: bool = False,
) -> Any:
    """A dataclass field with its help text and checks.

    ``choices``: the valid values; ``low`` / ``high``: inclusive bounds (``*_open``: exclusive), applied to
    each element of a list; ``length``: exact length of a list (2 for a range ``LO,HI``); ``flag``: the flag
    name when it is not ``--field-name``; ``kinds``: kind name -> config class for a union of configs;
    ``derived``: filled by the code that uses the config, not a setting."""
    if default is not MISSING and isinstance(default, (list, dict)):
        default_factory, default = (lambda value=default: copy.deepcopy(value)), MISSING
    metadata = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "length": length,
        "flag": flag,
        "aliases": tuple(aliases),
        "kinds": kinds,
        "derived": derived,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


# ----- field types -----
@dataclasses.dataclass(frozen=True)
class Spec:
    """What a field holds: ``base`` is int, float, str, bool, dict, list (of ``item``) or config (a class or a
    union of them by ``kinds``); ``optional``: None is valid too."""

    base: type
    optional: bool = False
    item: type | None = None
    kinds: dict[str, type] | None = None


def field_spec(cls: type, f: Field) -> Spec:
    hint = typing.get_type_hints(cls)[f.name]
    args = typing.get_args(hint)
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        optional = type(None) in args
        members = [a for a in args if a is not type(None)]
        if len(members) > 1:
            kinds = f.metadata.get("kinds")
            if not kinds or not all(is_config(m) for m in members):
                raise TypeError(f"{cls.__name__}.{f.name}: a union of config classes needs option(kinds=...)")
            return Spec(Config, optional, kinds=kinds)
        hint = members[0]
    if typing.get_origin(hint) is list:
        return Spec(list, optional, item=typing.get_args(hint)[0])
    if typing.get_origin(hint) is dict or hint is dict:
        return Spec(dict, optional)
    if is_config(hint):
        return Spec(Config, optional, kinds={"": hint})
    if hint not in (int, float, str, bool):
        raise TypeError(f"{cls.__name__}.{f.name}: unsupported config type {hint!r}")
    return Spec(hint, optional)


def is_config(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Config)


def flag_of(f: Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def label(f: Field) -> str:
    """How errors name a field: its Python name and its flag."""
    return f"{f.name} ({flag_of(f)})"


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}


def describe(f: Field, spec: Spec) -> str:
    """The valid values of a field, in words: 'an integer >= 2', 'one of constant, cosine', ..."""
    m = f.metadata
    if m.get("choices"):
        text = "one of " + ", ".join(str(c) for c in m["choices"])
    elif spec.base is Config:
        text = "one of " + ", ".join(spec.kinds) if len(spec.kinds) > 1 else "a mapping of its fields"
    elif spec.base is list:
        n = m.get("length")
        what = (f"{n} " if n else "a list of ") + _NAMES[spec.item].split(" ", 1)[1] + "s"
        text = ("LO,HI: " if n == 2 else "") + what + _bounds(m, plural=True)
    else:
        text = _NAMES[spec.base] + _bounds(m)
    return text + (" or none" if spec.optional else "")


def _bounds(m: typing.Mapping, plural: bool = False) -> str:
    lo, hi = m.get("low"), m.get("high")
    if lo is None and hi is None:
        return ""
    if lo is not None and hi is not None:
        return f" in {'(' if m['low_open'] else '['}{lo:g}, {hi:g}{')' if m['high_open'] else ']'}"
    if lo is not None:
        return f" {'>' if m['low_open'] else '>='} {lo:g}"
    return f" {'<' if m['high_open'] else '<='} {hi:g}"


def check_value(f: Field, spec: Spec, value: Any) -> Any:
    """``value`` checked against the field (type, finiteness, range, choices, length); ints are accepted for
    floats and returned as floats. Raises :class:`ConfigError` naming the field and its valid values."""
    if value is None:
        if spec.optional:
            return None
        raise ConfigError(f"{label(f)} must be {describe(f, spec)}, got None")
    if spec.base is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{label(f)} must be {describe(f, spec)}, got {value!r}")
        n = f.metadata.get("length")
        if n is not None and len(value) != n:
            raise ConfigError(f"{label(f)} must be {describe(f, spec)}, got {list(value)!r}")
        items = [_scalar(f, spec, spec.item, v, value) for v in value]
        if n == 2 and not items[0] < items[1]:
            raise ConfigError(f"{label(f)} must be LO,HI with LO < HI, got {items[0]:g},{items[1]:g}")
        return items
    if spec.base is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{label(f)} must be {describe(f, spec)}, got {value!r}")
        return value
    if spec.base is Config:
        if not any(type(value) is c for c in spec.kinds.values()):
            raise ConfigError(
                f"{label(f)} must be a {' or '.join(c.__name__ for c in spec.kinds.values())}, got {value!r}"
            )
        return value
    return _scalar(f, spec, spec.base, value, value)


def _scalar(f: Field, spec: Spec, base: type, value: Any, shown: Any) -> Any:
    bad = ConfigError(f"{label(f)} must be {describe(f, spec)}, got {shown!r}")
    if base is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if base in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if base is int and not isinstance(value, int):
            raise bad
        if base is float:
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"{label(f)} must be a finite number, got {value}")
        m = f.metadata
        lo, hi = m.get("low"), m.get("high")
        if (
            lo is not None
            and (value < lo or (m.get("low_open") and value == lo))
            or hi is not None
            and (value > hi or (m.get("high_open") and value == hi))
        ):
            raise bad
    elif not isinstance(value, base):
        raise bad
    if f.metadata.get("choices") and value not in f.metadata["choices"]:
        raise bad
    return value


def kind_of(value: Config, kinds: dict[str, type]) -> str:
    """The kind name of a config in a union (exact class, so subclasses are kinds of their own)."""
    return next(k for k, c in kinds.items() if type(value) is c)


# ----- the config base class -----
class Config:
    """Base of every typed config: fields declared with :func:`option`, checked when built."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field (type, range, choices, finite), then the class's :meth:`check`."""
        for f in fields(self):
            object.__setattr__(self, f.name, check_value(f, field_spec(type(self), f), getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Cross-field rules of the class (override; raise ValueError with the fix)."""

    def to_dict(self) -> dict:
        """The settings as JSON-ready nested dicts (no derived fields; a union-of-configs field records its
        ``kind``): what a run stores as its config and what :meth:`from_dict` reads back."""
        out = {}
        for f in fields(self):
            if f.metadata.get("derived"):
                continue
            value, spec = getattr(self, f.name), field_spec(type(self), f)
            if spec.base is Config and value is not None:
                kinds = spec.kinds
                value = ({"kind": kind_of(value, kinds)} if len(kinds) > 1 else {}) | value.to_dict()
            out[f.name] = copy.deepcopy(value)
        return out

    @classmethod
    def from_dict(cls, data: typing.Mapping, source: str = "") -> Config:
        """Build from :meth:`to_dict`'s nested form (a stored config); errors name ``source`` (a file) when given."""
        prefix = f"{source}: " if source else ""
        if not isinstance(data, typing.Mapping):
            raise ConfigError(f"{prefix}expected a mapping of {cls.__name__} fields, got {data!r}")
        known = {f.name: f for f in fields(cls) if f.init}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{prefix}unknown key {unknown[0]!r} for {cls.__name__}; valid keys: {', '.join(known)}")
        values = {}
        for name, value in data.items():
            f = known[name]
            spec = field_spec(cls, f)
            if spec.base is Config and isinstance(value, typing.Mapping):
                value = dict(value)
                default = f.default_factory() if f.default_factory is not MISSING else f.default
                kind = value.pop("kind", kind_of(default, spec.kinds)) if len(spec.kinds) > 1 else ""
                if kind not in spec.kinds:
                    raise ConfigError(f"{prefix}{label(f)} must be {describe(f, spec)}, got {kind!r}")
                if default is not None and type(default) is spec.kinds[kind]:  # unset fields: the section's default
                    value = {**default.to_dict(), **value}
                value = spec.kinds[kind].from_dict(value, source)
            values[name] = value
        try:
            return cls(**values)
        except ConfigError as e:
            raise ConfigError(f"{prefix}{e}" if source and not str(e).startswith(prefix) else str(e)) from None

    @classmethod
    def from_flat(cls, values: typing.Mapping | None = None, source: str = "", **kwargs: Any) -> Config:
        """Build from flat ``name: value`` pairs (recipe keys and flags, see :func:`flat_fields`); a union field's
        key takes the kind name. Keys of another kind than the chosen one are errors naming the right kind."""
        values = {**(values or {}), **kwargs}
        table = flat_fields(cls)
        unknown = sorted(set(values) - set(table))
        if unknown:
            raise ConfigError(
                f"{source + ': ' if source else ''}unknown key {unknown[0]!r}; valid keys: " + ", ".join(table)
            )
        return cls.from_dict(_nest(values, table), source)

    def flat(self) -> dict:
        """The settings as flat ``name: value`` pairs (the form of a recipe file)."""
        out = {}
        for f in fields(self):
            if f.metadata.get("derived"):
                continue
            value, spec = getattr(self, f.name), field_spec(type(self), f)
            if spec.base is Config:
                if len(spec.kinds) > 1:
                    out[key_of(f)] = kind_of(value, spec.kinds)
                out.update(value.flat())
            else:
                out[key_of(f)] = copy.deepcopy(value)
        return out


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One flat key of a config tree: its path of field names, its field and spec, and for fields inside a
    union of configs the kinds that have it (None elsewhere)."""

    path: tuple[str, ...]
    field: Field
    spec: Spec
    kinds: tuple[str, ...] | None = None
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)  # per kind, when inside a union


def flat_fields(cls: type) -> dict[str, Leaf]:
    """Every settable field of ``cls`` and its nested configs by flat name (names are unique across the tree;
    a field shared by several kinds of a union is one key)."""
    out: dict[str, Leaf] = {}
    _collect(cls, (), None, out)
    return out


def key_of(f: Field) -> str:
    """The flat name of a field: its flag without dashes (``--policy-temperature`` -> ``policy_temperature``)."""
    return flag_of(f)[2:].replace("-", "_")


def _collect(cls: type, path: tuple[str, ...], kind: str | None, out: dict[str, Leaf]) -> None:
    for f in fields(cls):
        if f.metadata.get("derived") or not f.init:
            continue
        spec, key = field_spec(cls, f), key_of(f)
        if spec.base is Config:
            if len(spec.kinds) > 1:
                out[key] = Leaf(path + (f.name,), f, spec)
                for name, sub in spec.kinds.items():
                    _collect(sub, path + (f.name,), name, out)
            else:
                _collect(spec.kinds[""], path + (f.name,), kind, out)
            continue
        prev = out.get(key)
        if prev is not None and (kind is None or prev.kinds is None or prev.path != path + (f.name,)):
            raise TypeError(f"{cls.__name__}.{f.name}: flat name {key!r} already used by another field of the tree")
        default = f.default if f.default is not MISSING else f.default_factory()
        if kind is None:
            out[key] = Leaf(path + (f.name,), f, spec)
        else:
            out[key] = Leaf(
                path + (f.name,),
                f,
                spec,
                (prev.kinds if prev else ()) + (kind,),
                {**(prev.defaults if prev else {}), kind: default},
            )


def _nest(values: dict, table: dict[str, Leaf]) -> dict:
    """Flat values -> the nested dict of :meth:`Config.from_dict`; a setting of another kind than the chosen one
    of its union is an error naming the kinds that take it."""
    nested: dict = {}
    for key, value in values.items():
        leaf = table[key]
        node = nested
        for name in leaf.path[:-1]:
            node = node.setdefault(name, {})
        if leaf.spec.base is Config:  # a kind selector
            node.setdefault(leaf.path[-1], {})["kind"] = value
        else:
            node[leaf.path[-1]] = value
    for selector in (leaf for leaf in table.values() if leaf.spec.base is Config):
        node = nested
        for name in selector.path:
            node = node.setdefault(name, {})
        f = selector.field
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        kind = node.setdefault("kind", kind_of(default, selector.spec.kinds))
        if kind not in selector.spec.kinds:
            raise ConfigError(f"{label(f)} must be {describe(f, selector.spec)}, got {kind!r}")
        for key in values:
            leaf = table[key]
            if leaf.kinds is not None and leaf.path[:-1] == selector.path and kind not in leaf.kinds:
                valid = [k for k, other in table.items() if other.kinds and kind in other.kinds]
                raise ConfigError(
                    f"{label(leaf.field)} is a setting of {flag_of(f)} {' / '.join(leaf.kinds)}, "
                    f"not of {flag_of(f)} {kind}; {kind} takes: {', '.join(valid)}"
                )
    return nested


# ----- command line -----
def common_keys(cls: type) -> set[str] | None:
    """The flat keys ``--help`` shows for ``cls``: those each config class of the tree lists in its ``COMMON``
    class attribute (a class without one shows every field); None when no class of the tree has one."""
    keys: set[str] = set()
    found = False

    def walk(c: type) -> None:
        nonlocal found
        common = getattr(c, "COMMON", None)
        found = found or common is not None
        for f in fields(c):
            if f.metadata.get("derived") or not f.init:
                continue
            spec = field_spec(c, f)
            if spec.base is Config:
                for sub in spec.kinds.values():
                    walk(sub)
            if common is None or f.name in common:
                keys.add(key_of(f))

    walk(cls)
    return keys if found else None


def add_config_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    skip: typing.Collection[str] = (),
    show_all: bool = True,
) -> None:
    """One flag per settable field of ``cls`` (nested configs included), with its help text, valid values and
    default, in one argument group per config section. Flags default to absent, so only what the user typed
    reaches :meth:`Config.from_flat` (over a recipe's values and the field defaults). Unless ``show_all``, the
    help lists only the :func:`common_keys` (every flag still parses; ``--help-all`` lists them all)."""
    groups: dict[tuple[str, ...], Any] = {}
    shown = None if show_all else common_keys(cls)
    for name, leaf in flat_fields(cls).items():
        if name in skip or leaf.spec.base is dict:
            continue
        f, spec = leaf.field, leaf.spec
        section = leaf.path[:-1] if leaf.spec.base is not Config else leaf.path
        target = parser
        if section and isinstance(parser, argparse.ArgumentParser):
            if section not in groups:
                groups[section] = parser.add_argument_group(_section_title(cls, section))
            target = groups[section]
        hidden = shown is not None and name not in shown
        kwargs: dict[str, Any] = {
            "dest": name,
            "default": argparse.SUPPRESS,
            "help": argparse.SUPPRESS if hidden else _help(leaf),
        }
        if spec.base is bool and not spec.optional:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _parser(f, spec)
            kwargs["metavar"] = _metavar(f, spec)
        target.add_argument(flag_of(f), *f.metadata.get("aliases", ()), **kwargs)


def _section_title(cls: type, path: tuple[str, ...]) -> str:
    """The help text of the nested config field at ``path`` (an argument group's title)."""
    for name in path:
        f = next(f for f in fields(cls) if f.name == name)
        spec = field_spec(cls, f)
        cls = next(iter(spec.kinds.values()))
    return f"{'.'.join(path)}: {f.metadata.get('help') or name}"


def _help(leaf: Leaf) -> str:
    f, spec = leaf.field, leaf.spec
    text = f.metadata.get("help") or ""
    if spec.base is Config:
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        return f"{text} ({', '.join(spec.kinds)}; default: {kind_of(default, spec.kinds)})"
    if leaf.kinds is not None:
        shown = {}
        for kind, value in leaf.defaults.items():
            shown.setdefault(_show(value), []).append(kind)
        default = "; ".join(f"{v} ({', '.join(k)})" for v, k in shown.items()) if len(shown) > 1 else next(iter(shown))
        return f"{text} [{describe(f, spec)}; default: {default}; for {', '.join(leaf.kinds)}]"
    default = f.default if f.default is not MISSING else f.default_factory()
    return f"{text} [{describe(f, spec)}; default: {_show(default)}]"


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "(empty)"
    if isinstance(value, str):
        return value or "''"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _metavar(f: Field, spec: Spec) -> str:
    if f.metadata.get("choices") or spec.base is Config:
        return "{" + ",".join(str(c) for c in (f.metadata.get("choices") or spec.kinds)) + "}"
    if spec.base is list:
        return "LO,HI" if f.metadata.get("length") == 2 else spec.item.__name__.upper() + ",..."
    return spec.base.__name__.upper()


def _parser(f: Field, spec: Spec) -> typing.Callable[[str], Any]:
    """argparse ``type`` for a field: text -> value, with the field's checks (an ArgumentTypeError naming the
    valid values); ``none`` gives None for optional fields."""

    def parse(text: str) -> Any:
        if spec.optional and text.strip().lower() == "none":
            return None
        try:
            if spec.base is Config:
                if text not in spec.kinds:
                    raise ValueError(text)
                return text
            if spec.base is list:
                value = [_cast(spec.item, v.strip()) for v in text.split(",") if v.strip()]
            else:
                value = _cast(spec.base, text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{label(f)} must be {describe(f, spec)}, got {text!r}") from None
        try:
            return check_value(f, spec, value)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = f.name
    return parse


def _cast(base: type, text: str) -> Any:
    if base is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(text)
        return text.lower() in ("true", "1", "yes")
    return base(text)


# ----- recipe files -----
def load_recipe(path: str | Path) -> dict:
    """A YAML recipe file as flat ``name: value`` pairs (errors name the file)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"recipe {path} " + ("is a directory, not a YAML file" if path.is_dir() else "does not exist")
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a readable YAML file ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"{path}: a recipe is a mapping of option names to values, got {type(data).__name__}")
    return data


def check_recipe(cls: type, recipe: typing.Mapping, source: str) -> None:
    """Every key of a recipe is a setting of ``cls`` and every value is valid for its field (errors name the file,
    the key and the valid values); cross-field rules are checked once flags are merged in."""
    table = flat_fields(cls)
    for key, value in recipe.items():
        if key not in table:
            raise ConfigError(f"{source}: unknown key {key!r}; valid keys: {', '.join(table)}")
        leaf = table[key]
        if leaf.spec.base is Config:
            if value not in leaf.spec.kinds:
                raise ConfigError(f"{source}: {key} must be {describe(leaf.field, leaf.spec)}, got {value!r}")
            continue
        try:
            check_value(leaf.field, leaf.spec, value)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None


# ----- reference documentation -----
def reference_markdown(cls: type) -> str:
    """A Markdown table of every field of ``cls``: its flag (= recipe key with underscores), valid values, default
    and help text; nested configs point to their own table (docs/configuration.md is generated from these)."""
    doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    rows = ["| flag / recipe key | valid values | default | what it sets |", "|---|---|---|---|"]
    for f in fields(cls):
        spec = field_spec(cls, f)
        default = f.default if f.default is not MISSING else f.default_factory()
        help_text = (f.metadata.get("help") or "").replace("|", "\\|")
        if spec.base is Config:
            kinds = spec.kinds
            if len(kinds) > 1:
                text = ", ".join(f"`{k}` ([{c.__name__}](#{c.__name__.lower()}))" for k, c in kinds.items())
                rows.append(
                    f"| `{flag_of(f)}` / `{key_of(f)}` | {text} | `{kind_of(default, kinds)}` | {help_text}: "
                    "the kind's settings are flags too |"
                )
            else:
                name = next(iter(kinds.values())).__name__
                rows.append(f"| `{f.name}` (section) | [{name}](#{name.lower()}) | | {help_text} |")
            continue
        where = (
            "(derived: set by the code that uses the config)"
            if f.metadata.get("derived")
            else ("(a mapping; in recipes)" if spec.base is dict else f"`{flag_of(f)}` / `{key_of(f)}`")
        )
        values = "a mapping" if spec.base is dict else describe(f, spec)
        rows.append(f"| {where} | {values} | `{_show(default)}` | {help_text} |")
    return f"`{cls.__module__}.{cls.__name__}`: {doc}\n\n" + "\n".join(rows)
