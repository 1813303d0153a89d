"""Class filters: keep (``--classes 0,3,7``) or drop (``--exclude-classes 9``) labelled samples.

The one implementation behind :meth:`Dataset.filter_classes <latentforge.data.Dataset.filter_classes>`
and the command line's ``--classes`` / ``--exclude-classes``. A filtered dataset carries its filter in
``Dataset.class_filter`` (``{"classes": [0, 3, 7]}`` or ``{"exclude_classes": [9]}``); a run
records it in ``run.json`` (``data.class_filter``), re-applies it when it is resumed and when its
own data is read back (its held-out split is that of the filtered data).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError

FLAGS = {"classes": "--classes", "exclude_classes": "--exclude-classes"}


def parse_class_list(value: str | Iterable | None, flag: str = "--classes") -> list | None:
    """``"0,3,7"`` (or ``[0, 3, 7]``, or class names such as ``"cat,dog"``) -> ``[0, 3, 7]``.

    Integer-looking items become ints; anything else stays a string (a class name, resolved
    against the data's ``class_names`` by :func:`filter_classes`). ``None`` / ``""`` -> ``None``.
    """
    if value is None:
        return None
    items = [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)
    if isinstance(value, str) and not value.strip():
        return None
    out: list = []
    for item in items:
        if isinstance(item, (bool, np.bool_)):
            raise ConfigError(f"{flag} {value!r}: expected labels such as 0,3,7")
        if isinstance(item, (int, np.integer)):
            out.append(int(item))
            continue
        text = str(item).strip()
        if not text:
            raise ConfigError(f"{flag} {value!r}: empty item (expected labels such as 0,3,7)")
        try:
            out.append(int(text))
        except ValueError:
            out.append(text)
    return list(dict.fromkeys(out))          # in order, without repeats


def _describe_labels(present: np.ndarray, class_names: list[str] | None) -> str:
    labels = [int(v) for v in present]
    shown = ", ".join(str(v) for v in labels) if len(labels) <= 20 else f"{labels[0]}..{labels[-1]}"
    if class_names and any(str(n) != str(i) for i, n in enumerate(class_names)):
        names = ", ".join(f"{i}={n}" for i, n in enumerate(class_names) if i in set(labels))
        if len(names) < 200:
            return f"labels {shown} ({names})"
    return f"labels {shown}"


def _resolve(items: list, ds, flag: str) -> list[int]:
    """Labels (ints) for ``items`` (ints or class names); DataError for one the data does not have."""
    present = np.unique(ds.y)
    have = set(int(v) for v in present)
    names = list(ds.class_names or [])
    out = []
    for item in items:
        if isinstance(item, str):
            if item not in names:
                raise DataError(f"{flag} {item}: {ds.name} has no class named {item!r} "
                                f"({_describe_labels(present, ds.class_names)})")
            item = names.index(item)
        if item not in have:
            raise DataError(f"{flag} {item}: no sample of {ds.name} has this label "
                            f"({_describe_labels(present, ds.class_names)})")
        out.append(int(item))
    return sorted(set(out))


def filter_classes(ds, classes=None, exclude=None):
    """The samples of ``ds`` whose label is in ``classes`` (or not in ``exclude``), as a new dataset
    of the same kind with ``class_filter`` set. With neither, ``ds`` itself.

    Raises:
        ConfigError: both ``classes`` and ``exclude`` are given, or a list is malformed.
        DataError: the data has no labels, a label (or class name) does not occur in the data,
            or no sample is left.
    """
    keep = parse_class_list(classes, FLAGS["classes"])
    drop = parse_class_list(exclude, FLAGS["exclude_classes"])
    if keep is None and drop is None:
        return ds
    if keep is not None and drop is not None:
        raise ConfigError("--classes and --exclude-classes: give one of them, not both")
    flag = FLAGS["classes"] if keep is not None else FLAGS["exclude_classes"]
    if ds.y is None:
        raise DataError(f"{flag}: {ds.name} has no labels to filter by (give --labels FILE)")
    labels = _resolve(keep if keep is not None else drop, ds, flag)
    member = np.isin(ds.y, labels)
    mask = member if keep is not None else ~member
    if not mask.any():
        raise DataError(f"{flag} {','.join(map(str, labels))}: no sample of {ds.name} is left")
    out = ds.subset(np.flatnonzero(mask))
    out.class_filter = {"classes": labels} if keep is not None else {"exclude_classes": labels}
    return out


def apply_recorded(ds, recorded: dict[str, Any] | None):
    """Re-apply a filter recorded by a run (``{"classes": [...]}`` / ``{"exclude_classes": [...]}``)."""
    if not recorded:
        return ds
    return filter_classes(ds, recorded.get("classes"), recorded.get("exclude_classes"))


def describe_filter(recorded: dict[str, Any] | None) -> str:
    """``--classes 0,3,7`` / ``--exclude-classes 9`` / ``all classes``."""
    if not recorded:
        return "all classes"
    key = "classes" if recorded.get("classes") is not None else "exclude_classes"
    return f"{FLAGS[key]} {','.join(str(v) for v in recorded[key])}"


def for_resume(ds, recorded: dict[str, Any] | None, run_dir) -> Any:
    """The data a resumed run continues on: the run's recorded filter applied to unfiltered data;
    data filtered otherwise than the run was is a ConfigError naming both filters."""
    given = getattr(ds, "class_filter", None)
    if not given:
        return apply_recorded(ds, recorded)
    if (recorded or None) != given:
        raise ConfigError(f"--resume: the run in {run_dir} was trained on {describe_filter(recorded)}, "
                          f"not {describe_filter(given)}; drop the class filter (the run's is re-applied) "
                          f"or start a new run")
    return ds


__all__ = ["parse_class_list", "filter_classes", "apply_recorded", "describe_filter", "for_resume"]
