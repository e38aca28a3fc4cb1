"""A small registry with close-match suggestions and Python entry-point discovery.

Task families and model loaders are plugins: evalkit registers its own with a decorator, and a
separate package adds more through the ``evalkit.task_families`` / ``evalkit.models`` entry-point
groups, loaded lazily the first time a registry is asked for a name it does not know.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from typing import Any, Generic, TypeVar

from evalkit.errors import EvalkitError

T = TypeVar("T")

# what `evalkit list` calls each kind of name
_LIST_COMMANDS = {"task": "tasks", "group": "groups", "model": "models", "model loader": "models",
                  "task family": "families"}


class UnknownNameError(EvalkitError, KeyError):
    """A model, task or group name that is not known; the message suggests close matches."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind, self.name = kind, name
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = _LIST_COMMANDS.get(kind)  # `evalkit list` has no subcommand for every kind (sources)
        see = f" (see `evalkit list {listing}`)" if listing else ""
        super().__init__(f"unknown {kind} {name!r}{hint}{see}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]

    @classmethod
    def several(cls, kind: str, errors: Sequence[UnknownNameError], known: Iterable[str]) -> UnknownNameError:
        """Every unknown name of one list in one error (``--tasks imagenett,objectnett``), each with its
        close matches; a single one reads as before."""
        if len(errors) == 1:
            return errors[0]
        known = list(known)
        parts = []
        for e in errors:
            close = difflib.get_close_matches(e.name, known, n=3, cutoff=0.5)
            parts.append(f"{e.name!r}" + (f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""))
        listing = _LIST_COMMANDS.get(kind)
        see = f" (see `evalkit list {listing}`)" if listing else ""
        out = cls.__new__(cls)
        out.kind, out.name = kind, ",".join(e.name for e in errors)
        KeyError.__init__(out, f"{len(errors)} unknown {kind}s: {', '.join(parts)}{see}")
        return out


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None, builtins: Sequence[str] = ()) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False
        #: the modules whose decorators register evalkit's own items, imported (by name: they import
        #: the module that holds this registry) on the first lookup, so importing one module of a
        #: package does not import all of them
        self._builtins = tuple(builtins)

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T, *, replace: bool = False) -> None:
        if name in self._items and not replace and self._items[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def _load_builtins(self) -> None:
        if self._builtins:
            modules, self._builtins = self._builtins, ()
            for module in modules:
                importlib.import_module(module)

    def _load_entry_points(self) -> None:
        self._load_builtins()
        if self._entry_points_loaded or not self.entry_point_group:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            if ep.name in self._items:
                continue
            try:
                self._items[ep.name] = ep.load()
            except Exception as e:  # a broken plugin must not take the whole tool down
                import warnings

                warnings.warn(f"{self.kind} plugin {ep.name!r} ({ep.value}) failed to load: {e}", stacklevel=2)

    def get(self, name: str) -> T:
        self._load_builtins()
        if name not in self._items:
            self._load_entry_points()
        if name not in self._items:
            raise UnknownNameError(self.kind, name, self.names())
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        self._load_builtins()
        if name not in self._items:
            self._load_entry_points()
        return name in self._items

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def items(self) -> list[tuple[str, Any]]:
        self._load_entry_points()
        return sorted(self._items.items())


task_families: Registry[Any] = Registry("task family", "evalkit.task_families")
model_loaders: Registry[Any] = Registry("model loader", "evalkit.models")
