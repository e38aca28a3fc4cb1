"""Task specs: datasets are YAML files, not code.

A task file names its ``family`` (a registered plugin), its ``source`` (where samples come from),
class names, templates, metric and preprocessing. ``include: other.yaml`` inherits from another
file (keys here win, dicts are merged one level deep). A group file has ``group:`` and ``tasks:``
(a list of task or group names). Ad-hoc tasks need no file: ``wds:/path``, ``folder:/path`` and
``hf:/path`` build a spec on the fly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evalkit.registry import UnknownNameError

TASK_KEYS = {
    "task", "family", "description", "source", "classnames", "classnames_file", "templates",
    "templates_file", "metric", "preprocess", "include", "protocol", "claims_name", "tags",
}
GROUP_KEYS = {"group", "tasks", "description", "include"}


class TaskSpecError(ValueError):
    """A task or group file that is malformed; the message names the file and the field."""


@dataclass
class TaskSpec:
    name: str
    family: str
    source: dict[str, Any]
    classnames: list[str] | None = None
    templates: list[str] | None = None
    metric: str = "acc1"
    preprocess: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    path: str = ""
    tags: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return self.description or f"{self.family} task from {self.source.get('type', '?')}"


@dataclass
class GroupSpec:
    name: str
    tasks: list[str]
    description: str = ""
    path: str = ""


def default_task_dirs() -> list[Path]:
    """Where task YAMLs live: ``$EVALKIT_TASK_PATH`` entries, then the repository's ``tasks/``."""
    dirs = [Path(p) for p in os.environ.get("EVALKIT_TASK_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parents[2] / "tasks")
    return dirs


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise TaskSpecError(f"{path}: cannot read: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise TaskSpecError(f"{path}: invalid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise TaskSpecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _resolve_includes(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise TaskSpecError(f"{path}: include cycle: {' -> '.join(str(p) for p in (*seen, path))}")
    data = _read_yaml(path)
    inc = data.pop("include", None)
    if inc is None:
        return data
    if not isinstance(inc, str):
        raise TaskSpecError(f"{path}: field 'include' must be a file name")
    parent = _resolve_includes((path.parent / inc).resolve(), (*seen, path))
    merged = dict(parent)
    for k, v in data.items():
        merged[k] = {**parent[k], **v} if isinstance(v, dict) and isinstance(parent.get(k), dict) else v
    return merged


def _read_list_file(path: Path, what: str, owner: Path) -> list[str]:
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except OSError as e:
        raise TaskSpecError(f"{owner}: {what} file {path} cannot be read: {e.strerror or e}") from e
    return [ln for ln in lines if ln]


def _str_list(value: Any, fld: str, path: Path) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TaskSpecError(f"{path}: field '{fld}' must be a list of strings")
    return list(value)


def parse_task(data: dict[str, Any], path: Path) -> TaskSpec:
    unknown = set(data) - TASK_KEYS
    if unknown:
        raise TaskSpecError(f"{path}: unknown field(s) {sorted(unknown)}; allowed: {sorted(TASK_KEYS)}")
    for required in ("task", "family", "source"):
        if required not in data:
            raise TaskSpecError(f"{path}: missing required field '{required}'")
    source = data["source"]
    if not isinstance(source, dict) or "type" not in source:
        raise TaskSpecError(f"{path}: field 'source' must be a mapping with a 'type'")
    classnames = templates = None
    if "classnames" in data:
        classnames = _str_list(data["classnames"], "classnames", path)
    elif "classnames_file" in data:
        classnames = _read_list_file(path.parent / data["classnames_file"], "classnames", path)
    if "templates" in data:
        templates = _str_list(data["templates"], "templates", path)
    elif "templates_file" in data:
        templates = _read_list_file(path.parent / data["templates_file"], "templates", path)
    for t in templates or []:
        if "{c}" not in t:
            raise TaskSpecError(f"{path}: template {t!r} has no '{{c}}' placeholder")
    for fld in ("preprocess", "protocol"):
        if not isinstance(data.get(fld, {}), dict):
            raise TaskSpecError(f"{path}: field '{fld}' must be a mapping")
    return TaskSpec(
        name=str(data["task"]),
        family=str(data["family"]),
        source=dict(source),
        classnames=classnames,
        templates=templates,
        metric=str(data.get("metric", "acc1")),
        preprocess=dict(data.get("preprocess", {})),
        protocol=dict(data.get("protocol", {})),
        description=str(data.get("description", "")),
        path=str(path),
        tags=list(data.get("tags", [])),
    )


def parse_group(data: dict[str, Any], path: Path) -> GroupSpec:
    unknown = set(data) - GROUP_KEYS
    if unknown:
        raise TaskSpecError(f"{path}: unknown field(s) {sorted(unknown)} in group; allowed: {sorted(GROUP_KEYS)}")
    if "tasks" not in data:
        raise TaskSpecError(f"{path}: group is missing required field 'tasks'")
    return GroupSpec(str(data["group"]), _str_list(data["tasks"], "tasks", path), str(data.get("description", "")), str(path))


@dataclass
class TaskIndex:
    """All task and group files found under the task directories."""

    tasks: dict[str, TaskSpec]
    groups: dict[str, GroupSpec]

    @classmethod
    def load(cls, dirs: list[Path] | None = None) -> TaskIndex:
        tasks: dict[str, TaskSpec] = {}
        groups: dict[str, GroupSpec] = {}
        for d in dirs if dirs is not None else default_task_dirs():
            if not d.is_dir():
                continue
            for path in sorted(d.rglob("*.yaml")):
                data = _resolve_includes(path.resolve())
                if data.get("abstract"):
                    continue
                if "group" in data:
                    g = parse_group(data, path)
                    groups.setdefault(g.name, g)
                elif "task" in data:
                    t = parse_task(data, path)
                    tasks.setdefault(t.name, t)
                # files with neither key are include-only bases
        return cls(tasks, groups)

    def resolve(self, names: list[str]) -> list[TaskSpec]:
        """Expand task names, group names and ad-hoc specs into an ordered, de-duplicated list."""
        out: dict[str, TaskSpec] = {}

        def expand(name: str, stack: tuple[str, ...]) -> None:
            if name in stack:
                raise TaskSpecError(f"group cycle: {' -> '.join((*stack, name))}")
            if ":" in name and name.split(":", 1)[0] in ADHOC_PREFIXES:
                spec = adhoc_spec(name)
                out.setdefault(spec.name, spec)
            elif name in self.tasks:
                out.setdefault(name, self.tasks[name])
            elif name in self.groups:
                for child in self.groups[name].tasks:
                    expand(child, (*stack, name))
            else:
                raise UnknownNameError("task", name, [*self.tasks, *self.groups])

        for n in names:
            expand(n.strip(), ())
        return list(out.values())


ADHOC_PREFIXES = ("wds", "folder", "hf")


def adhoc_spec(name: str) -> TaskSpec:
    """``wds:/path``, ``folder:/path[?classnames=FILE]``, ``hf:/path`` → a classification task spec."""
    kind, rest = name.split(":", 1)
    path, _, query = rest.partition("?")
    opts = dict(kv.split("=", 1) for kv in query.split("&") if "=" in kv)
    base = Path(path).name or "data"
    source: dict[str, Any] = {"type": kind, "path": path, **opts}
    templates = None
    if kind in ("folder", "hf"):
        templates = ["a photo of a {c}."]  # wds folders carry their own templates
    return TaskSpec(
        name=f"{kind}_{base}",
        family="classification",
        source=source,
        templates=templates,
        description=f"ad-hoc {kind} dataset at {path}",
        path=name,
    )
