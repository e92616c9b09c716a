"""Settings dataclasses with each field defined once: its default, what it means, and its allowed
values. ``validate_settings`` checks a config against that definition and the command line derives one option
per field from it (``ui.cli.add_settings_options``), so no default or range is written twice.

A field is ``setting(default, help, ...)``; a config class is a dataclass whose fields all are, with
``validate = validate_settings``.
"""
from __future__ import annotations

import math
from dataclasses import field, fields
from typing import Callable

__all__ = ["check_ranges", "setting", "item_kind", "check_value", "validate_settings"]


def setting(default, help: str, *, choices=None, low=None, high=None, open_low: bool = False,
            open_high: bool = False, rule: Callable | None = None, expected: str = "", parse: Callable | None = None,
            optional: bool = False, cli: bool = True):
    """One field of a settings dataclass.

    ``choices``: the allowed values; else numbers (tuples: each item) in ``low``..``high``, each end
    closed unless said open. ``rule(value) -> bool`` and ``expected`` add a check of their own.
    ``parse(text) -> value`` reads the field from the command line where the plain type does not
    (W+ layer lists, say); ``optional``: None is allowed; ``cli``: an option of the command line.
    """
    return field(default=default, metadata=dict(help=help, choices=choices, low=low, high=high, open_low=open_low,
                                                open_high=open_high, rule=rule, expected=expected, parse=parse,
                                                optional=optional, cli=cli))


def item_kind(f) -> type:
    """The type of a field's value, or of its items for a tuple field."""
    default = f.default
    if isinstance(default, tuple):
        return type(default[0]) if default else int
    return type(default)


def check_value(name: str, value, meta: dict, kind: type) -> None:
    """Raise ValueError naming the field and the value when ``value`` breaks ``meta``."""
    if value is None and meta["optional"]:
        return
    if meta["choices"] is not None:
        if value not in meta["choices"]:
            raise ValueError(f"{name}={value!r}; expected one of {tuple(meta['choices'])}")
        return
    if kind is str:
        if not isinstance(value, str) or (meta["rule"] is not None and not meta["rule"](value)):
            raise ValueError(f"{name}={value!r}; expected {meta['expected'] or 'text'} ({meta['help']})")
        return
    items = value if isinstance(value, (tuple, list)) else (value,)
    if isinstance(value, (tuple, list)) and not value:
        raise ValueError(f"{name}={value!r}; expected at least one value ({meta['help']})")
    lo, hi = meta["low"], meta["high"]
    for v in items:
        ok = isinstance(v, int) and not isinstance(v, bool) if kind is int else \
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        in_range = ok and (lo is None or (v > lo if meta["open_low"] else v >= lo)) and \
            (hi is None or (v < hi if meta["open_high"] else v <= hi))
        if not in_range:
            interval = f"{'(' if meta['open_low'] else '['}{'-inf' if lo is None else lo}, " \
                       f"{'inf' if hi is None else hi}{')' if meta['open_high'] else ']'}"
            raise ValueError(f"{name}={value!r}; expected {'integers' if kind is int else 'finite numbers'} "
                             f"in {interval} ({meta['help']})" if isinstance(value, (tuple, list)) else
                             f"{name}={value!r}; expected {'an integer' if kind is int else 'a finite number'} "
                             f"in {interval} ({meta['help']})")
    if meta["rule"] is not None and not meta["rule"](value):
        raise ValueError(f"{name}={value!r}; expected {meta['expected']}")


def check_ranges(obj, ranges: dict, what: str) -> None:
    """Refuse a field of ``obj`` that is not a number in its [lo, hi] of ``ranges`` (name -> (lo, hi)),
    naming ``what``, the field, its value and the range (the phantom and DRR parameters)."""
    for name, (lo, hi) in ranges.items():
        v = getattr(obj, name)
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi):
            raise ValueError(f"{what} parameter {name}={v!r}; expected a number in [{lo}, {hi}]")


def validate_settings(config):
    """Check every field of a settings dataclass against its definition; returns the config."""
    for f in fields(config):
        check_value(f.name, getattr(config, f.name), f.metadata, item_kind(f))
    return config
