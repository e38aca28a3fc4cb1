"""Task specs: datasets are YAML files, not code.

A task file names its ``family`` (a registered plugin), its ``source`` (where samples come from),
class names, templates, metric and view (``transform``), and may list ``aliases`` (other names it answers
to, e.g. clip_benchmark's: ``imagenet`` for ``imagenet1k``, ``vtab/cifar10`` for ``cifar10``).
``wds/NAME`` is clip_benchmark's WebDataset mirror ``wds_NAME`` (``/`` as ``-``): the task that
lists that mirror among its layouts, read from the mirror only, under the name ``wds/NAME`` (its
results never stand in for the task's own protocol: VTAB's EuroSAT split is not the whole dataset). ``include: other.yaml`` inherits from another
file (keys here win, dicts are merged one level deep). A group file has ``group:`` and ``tasks:``
(a list of task or group names), and may carry its ``aggregate``: the averages `evalkit report`
prints over its members (:class:`AggregateSpec`); ``run: false`` marks a group read by reporting
only (the paper's BASIC-L sets), which ``--tasks`` refuses. Ad-hoc tasks need no file: ``wds:/path``, ``folder:/path`` and
``hf:/path`` build a spec on the fly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evalkit.errors import EvalkitError
from evalkit.metric_table import REDUCTIONS, parse
from evalkit.registry import UnknownNameError
from evalkit.resources import builtin_tasks_dir

log = logging.getLogger("evalkit")

TASK_KEYS = {
    "task", "family", "description", "source", "classnames", "classnames_file", "templates",
    "templates_file", "metric", "view", "include", "protocol", "tags", "aliases", "version", "envelope", "fetch",
}
# keys a file replaces whole when it includes another (not merged one level deep as other mappings):
# a ``fetch:`` block names one source, and a manual block must not inherit a Hub block's repo
REPLACED_KEYS = {"fetch"}
WDS_PREFIX = "wds/"  # clip_benchmark's name for a dataset read from its WebDataset mirror
GROUP_KEYS = {"group", "tasks", "description", "include", "aggregate", "run"}
AGGREGATE_KEYS = {"name", "column", "claim", "reduce", "metrics", "exclude", "description"}


class TaskSpecError(EvalkitError, ValueError):
    """A task or group file that is malformed; the message names the file and the field."""


@dataclass
class TaskSpec:
    name: str
    family: str
    source: dict[str, Any]
    classnames: list[str] | None = None
    templates: list[str] | None = None
    metric: str = "acc1"
    # how a sample becomes an embedding: the task file's ``view:`` block as it is written
    view: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    path: str = ""
    tags: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    # the family's own YAML keys (its ``yaml_keys``), which its config dataclass validates
    options: dict[str, Any] = field(default_factory=dict)
    # the task file's protocol version, recorded in every result: a changed protocol shows
    version: str | None = None
    # ``view`` parsed (an evalkit.views.ViewSpec) when the task is resolved, with the run's --transform
    # and --frames (evalkit.tasks.common.with_view); None until then
    view_spec: Any = None
    # the protocol variants `evalkit envelope` scores besides the task's own (the task file's
    # ``envelope:`` block as written: other templates_files / classnames_files evalkit ships for it)
    envelope: dict[str, Any] = field(default_factory=dict)
    # where ``evalkit data get`` / ``run --download`` fetch the data: the task file's ``fetch:`` block
    # as written, as a list (a mapping, or a list of them: a task reading two splits); parsed by
    # :meth:`fetch_specs` when the task is resolved (reading task files imports no data module);
    # empty: the task names no source
    fetch: list[dict[str, Any]] = field(default_factory=list)
    # whether fetched data must count ``protocol.expected_size`` (and the task's classes): False for a
    # ``wds/NAME`` mirror task whose mirror is not the task's own protocol (VTAB's EuroSAT split)
    fetch_checks_counts: bool = True

    @property
    def base_dir(self) -> Path | None:
        """The task file's folder (relative file names in its source resolve there); None for
        an ad-hoc task."""
        return Path(self.path).parent if self.path.endswith((".yaml", ".yml")) else None

    def check_options(self, family_keys: Sequence[str]) -> None:
        """The family's own YAML keys are ``family_keys``; anything else beyond the common keys
        is an error naming the file."""
        unknown = sorted(set(self.options) - set(family_keys))
        if unknown:
            raise TaskSpecError(f"{self.path or self.name}: unknown field(s) {unknown}; allowed: "
                                f"{sorted(TASK_KEYS | set(family_keys))}")

    def fetch_specs(self) -> list[Any]:
        """The ``fetch:`` entries parsed (:class:`evalkit.data.fetch.HubSpec` or ``ManualSpec``);
        a bad one is a :class:`TaskSpecError` naming the task file and the key."""
        return parse_fetch_block(self.fetch, self.name, self.path or self.name)

    def describe(self) -> str:
        return self.description or f"{self.family} task from {self.source.get('type', '?')}"

    def split_specs(self) -> list[tuple[dict[str, Any], TaskSpec]]:
        """A task over several splits (``protocol.splits``: a list of source settings, e.g.
        UCF-101's ``{split: 1}``, ``{split: 2}``, ``{split: 3}``): per split, its settings and the
        task with them merged into its source (into each layout of an ``any`` source). Empty for
        a task of one split."""
        splits = self.protocol.get("splits")
        if not splits:
            return []
        if not isinstance(splits, list) or not all(isinstance(s, dict) for s in splits):
            raise TaskSpecError(f"{self.path or self.name}: protocol.splits must be a list of source settings")
        out = []
        for settings in splits:
            source = dict(self.source)
            if source.get("type") == "any":
                source["layouts"] = [{**layout, **settings} for layout in source.get("layouts", [])]
            else:
                source.update(settings)
            out.append((settings, dataclasses.replace(self, source=source)))
        return out


@dataclass(frozen=True)
class AggregateSpec:
    """One average a group carries (an entry of its ``aggregate`` list), as lm-evaluation-harness
    groups carry ``aggregate_metric_list``: the ``reduce`` (``mean``, or ``gap``: the first member
    minus the mean; :data:`evalkit.metric_table.REDUCTIONS`) over the group's tasks less
    ``exclude``, each scored on its task file's ``metric`` or, with ``metrics``, on each of those.
    ``column`` puts it on the leaderboard; ``claim`` is its task name in the claims files (the
    paper's printed aggregate, e.g. ``AVG27``). ``name`` defaults to the group's."""

    name: str
    column: str | None = None
    claim: str | None = None
    reduce: str = "mean"
    metrics: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    description: str = ""


@dataclass
class GroupSpec:
    name: str
    tasks: list[str]
    description: str = ""
    path: str = ""
    run: bool = True  # False: read by reporting only (its aggregates); `--tasks` refuses it
    aggregates: list[AggregateSpec] = field(default_factory=list)


def default_task_dirs(extra: list[Path] | tuple[Path, ...] = ()) -> list[Path]:
    """Where task YAMLs are read from, first match of a name wins: ``extra`` (``--task-dir``),
    then ``$EVALKIT_TASK_PATH`` entries, then the built-in tasks (:func:`builtin_tasks_dir`)."""
    dirs = [Path(d) for d in extra]
    dirs += [Path(p) for p in os.environ.get("EVALKIT_TASK_PATH", "").split(os.pathsep) if p]
    dirs.append(builtin_tasks_dir())
    return dirs


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise TaskSpecError(f"{path}: cannot read: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        context = getattr(e, "context", None)
        raise TaskSpecError(f"{where}: invalid YAML: {problem}" + (f" ({context})" if context else "")) from e
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
    parent.pop("aliases", None)  # names belong to the file that gives them, not to files including it
    merged = dict(parent)
    for k, v in data.items():
        merged[k] = ({**parent[k], **v} if isinstance(v, dict) and isinstance(parent.get(k), dict)
                     and k not in REPLACED_KEYS else v)
    return merged


def read_list_file(path: Path, what: str, owner: Path | str) -> list[str]:
    """The non-blank lines of a class-name or template file, stripped; one that cannot be read is a
    :class:`TaskSpecError` naming the task file (``owner``), what the file holds and its path."""
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
    # keys beyond the common ones belong to the family, which checks them (TaskSpec.check_options)
    # when the task is run: reading task files imports no family (and no torch)
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
        classnames = read_list_file(path.parent / data["classnames_file"], "classnames", path)
    if "templates" in data:
        templates = _str_list(data["templates"], "templates", path)
    elif "templates_file" in data:
        templates = read_list_file(path.parent / data["templates_file"], "templates", path)
    for t in templates or []:
        if "{c}" not in t:
            raise TaskSpecError(f"{path}: template {t!r} has no '{{c}}' placeholder")
    for fld in ("view", "protocol", "envelope"):
        if not isinstance(data.get(fld, {}), dict):
            raise TaskSpecError(f"{path}: field '{fld}' must be a mapping")
    aliases = _str_list(data.get("aliases", []), "aliases", path)
    fetch = data.get("fetch")
    fetch = [] if fetch is None else fetch if isinstance(fetch, list) else [fetch]
    if not all(isinstance(f, dict) for f in fetch) or (data.get("fetch") is not None and not fetch):
        raise TaskSpecError(f"{path}: field 'fetch' must be a mapping (repo, revision, split ... or manual: URL) "
                            f"or a non-empty list of them, got {data.get('fetch')!r}")
    metric = parse(str(data.get("metric", "acc1")))
    if metric is None or metric.suffix or metric.metric.aggregate:
        raise TaskSpecError(f"{path}: field 'metric': {data.get('metric')!r} is not a metric of a task (the metric "
                            f"table, evalkit.metric_table.METRICS: acc1, mean_acc1_acc5, mean_recall, acc1@16shot ...)")
    return TaskSpec(
        name=str(data["task"]),
        family=str(data["family"]),
        source=dict(source),
        classnames=classnames,
        templates=templates,
        metric=str(data.get("metric", "acc1")),
        view=dict(data.get("view", {})),
        protocol=dict(data.get("protocol", {})),
        description=str(data.get("description", "")),
        path=str(path),
        tags=list(data.get("tags", [])),
        aliases=aliases,
        options={k: v for k, v in data.items() if k not in TASK_KEYS},
        version=None if data.get("version") is None else str(data["version"]),
        envelope=dict(data.get("envelope", {})),
        fetch=fetch,
    )


def parse_fetch_block(entries: list[dict[str, Any]], task: str, path: Path | str) -> list[Any]:
    """A task's ``fetch:`` entries parsed (:func:`evalkit.data.fetch.parse_fetch_spec`); a bad one
    is a :class:`TaskSpecError` naming the file, the entry (``fetch[1]`` of a list) and the key.
    Nothing is looked up: no network."""
    if not entries:
        return []
    # not at the top: `evalkit list tasks` imports no data module
    from evalkit.data.fetch import FetchSpecError, parse_fetch_spec

    out = []
    for i, raw in enumerate(entries):
        try:
            out.append(parse_fetch_spec(raw, task))
        except FetchSpecError as e:
            where = f"fetch[{i}]" if len(entries) > 1 else "fetch"
            raise TaskSpecError(f"{path}: {where}: {e}") from e
    return out


def parse_group(data: dict[str, Any], path: Path) -> GroupSpec:
    unknown = set(data) - GROUP_KEYS
    if unknown:
        raise TaskSpecError(f"{path}: unknown field(s) {sorted(unknown)} in group; allowed: {sorted(GROUP_KEYS)}")
    if "tasks" not in data:
        raise TaskSpecError(f"{path}: group is missing required field 'tasks'")
    run = data.get("run", True)
    if not isinstance(run, bool):
        raise TaskSpecError(f"{path}: field 'run' must be true or false, got {run!r}")
    name = str(data["group"])
    tasks = _str_list(data["tasks"], "tasks", path)
    return GroupSpec(name, tasks, str(data.get("description", "")), str(path), run,
                     _parse_aggregates(data.get("aggregate"), name, tasks, path))


def _parse_aggregates(value: Any, group: str, tasks: list[str], path: Path) -> list[AggregateSpec]:
    """A group's ``aggregate`` list (one mapping is a list of one); every problem names the file
    and the key (``aggregate[1].reduce``)."""
    if value is None:
        return []
    entries = [value] if isinstance(value, dict) else value
    if not isinstance(entries, list) or not entries:
        raise TaskSpecError(f"{path}: field 'aggregate' must be a list of mappings (keys {sorted(AGGREGATE_KEYS)})")
    out: list[AggregateSpec] = []
    for i, entry in enumerate(entries):
        where = f"{path}: aggregate[{i}]"
        if not isinstance(entry, dict):
            raise TaskSpecError(f"{where}: must be a mapping (keys {sorted(AGGREGATE_KEYS)}), got {entry!r}")
        unknown = sorted(set(entry) - AGGREGATE_KEYS)
        if unknown:
            raise TaskSpecError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(AGGREGATE_KEYS)}")
        for key in ("name", "column", "claim", "reduce", "description"):
            if key in entry and (not isinstance(entry[key], str) or not entry[key].strip()):
                raise TaskSpecError(f"{where}.{key}: must be a non-empty string, got {entry[key]!r}")
        reduce = entry.get("reduce", "mean")
        if reduce not in REDUCTIONS:
            raise TaskSpecError(f"{where}.reduce: unknown reduction {reduce!r}; use one of {list(REDUCTIONS)}")
        metrics = None
        if "metrics" in entry:
            metrics = tuple(_str_list(entry["metrics"], f"aggregate[{i}].metrics", path))
            for m in metrics:
                parsed = parse(m)
                if parsed is None or parsed.suffix or parsed.metric.aggregate:
                    raise TaskSpecError(f"{where}.metrics: {m!r} is not a metric of a task "
                                        f"(evalkit.metric_table.METRICS)")
            if not metrics:
                raise TaskSpecError(f"{where}.metrics: empty list (leave the key out for each task's own metric)")
        exclude = tuple(_str_list(entry.get("exclude", []), f"aggregate[{i}].exclude", path))
        out.append(AggregateSpec(
            name=entry.get("name", group), column=entry.get("column"), claim=entry.get("claim"), reduce=reduce,
            metrics=metrics, exclude=exclude, description=entry.get("description", "")))
    names = [a.name for a in out]
    for j, n in enumerate(names):
        if n in names[:j]:
            raise TaskSpecError(f"{path}: aggregate[{j}].name: {n!r} is also aggregate[{names.index(n)}]'s name "
                                f"(an entry without 'name' takes the group's, {group!r})")
    return out


@dataclass
class TaskIndex:
    """All task and group files found under the task directories."""

    tasks: dict[str, TaskSpec]
    groups: dict[str, GroupSpec]
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> task name
    dirs: list[Path] = field(default_factory=list)
    # clip_benchmark WebDataset name ("vtab/eurosat") -> (task name, its layout reading that mirror)
    mirrors: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def load(cls, dirs: list[Path] | None = None, *, extra: list[Path] | tuple[Path, ...] = ()) -> TaskIndex:
        """The tasks under ``dirs`` alone, or by default the built-in tasks plus ``extra`` folders
        (``--task-dir``; a task there replaces a built-in of the same name, with a warning, and
        its name wins over a built-in alias). A folder given in ``extra`` that does not exist is
        an error; so are two tasks, or a task and an alias, of one name in one folder."""
        for d in extra:
            if not Path(d).is_dir():
                raise TaskSpecError(f"--task-dir {d}: not a folder")
        listed = [Path(d) for d in dirs] if dirs is not None else default_task_dirs(extra)
        folders = list({d.resolve(): d for d in reversed(listed)}.values())[::-1]  # each folder once, first place
        tasks: dict[str, TaskSpec] = {}
        groups: dict[str, GroupSpec] = {}
        origin: dict[str, Path] = {}  # task or group name -> the folder it was read from
        for d in folders:
            if not d.is_dir():
                continue
            for path in sorted(d.rglob("*.yaml")):
                data = _resolve_includes(path.resolve())
                if data.get("abstract"):
                    continue
                if "group" in data or "task" in data:
                    item: TaskSpec | GroupSpec = parse_group(data, path) if "group" in data else parse_task(data, path)
                    table: dict[str, Any] = groups if "group" in data else tasks
                    if item.name in table:
                        if origin[item.name] == d:
                            raise TaskSpecError(f"{path}: {item.name!r} is also defined in {table[item.name].path}")
                        log.warning("%s (%s) replaces %s", item.name, table[item.name].path, path)
                        continue
                    table[item.name] = item
                    origin[item.name] = d
                # files with neither key are include-only bases
        return cls(tasks, groups, _alias_table(tasks, groups, origin), folders, _mirror_table(tasks))

    def lookup(self, name: str) -> TaskSpec | None:
        """The task called ``name`` or aliased so, or None."""
        task = self.aliases.get(name, name)
        return self.tasks.get(task)

    def mirror(self, name: str) -> TaskSpec | None:
        """``wds/NAME``: the task reading clip_benchmark's mirror ``wds_NAME``, from that mirror
        only, named ``wds/NAME``. NAME may also be a task or alias with exactly one mirror."""
        if name not in self.mirrors and (spec := self.lookup(name)) is not None:
            mine = [m for m, (task, _) in self.mirrors.items() if task == spec.name]
            if len(mine) != 1:
                raise TaskSpecError(
                    f"{WDS_PREFIX}{name}: task {spec.name} ({spec.path}) has "
                    + (f"{len(mine)} WebDataset mirrors ({', '.join(WDS_PREFIX + m for m in mine)}); name one"
                       if mine else f"no WebDataset mirror; use --tasks {spec.name} to read it from its own layout"))
            name = mine[0]
        if name not in self.mirrors:
            return None
        task, layout = self.mirrors[name]
        spec = self.tasks[task]
        source = {**spec.source, "layouts": [layout]} if spec.source.get("type") == "any" else layout
        fetch, checks = _mirror_fetch(spec, layout, name)
        return dataclasses.replace(spec, name=WDS_PREFIX + name, aliases=[], source=source, description=(
                                       f"{spec.name} read from clip_benchmark's WebDataset mirror {layout['path']}"),
                                   fetch=fetch, fetch_checks_counts=checks)

    def group_tasks(self, name: str) -> list[str]:
        """The task names a group stands for, groups in it expanded, in order, each once: what
        reporting averages over. A ``run: false`` group is expanded too; a name that is neither a
        task (or alias) nor a group is an error naming the group file."""
        out: dict[str, None] = {}

        def expand(group: str, stack: tuple[str, ...]) -> None:
            if group in stack:
                raise TaskSpecError(f"group cycle: {' -> '.join((*stack, group))}")
            for child in self.groups[group].tasks:
                if (spec := self.lookup(child)) is not None:
                    out[spec.name] = None
                elif child in self.groups:
                    expand(child, (*stack, group))
                else:
                    raise TaskSpecError(f"{self.groups[group].path}: tasks: {child!r} is no task or group "
                                        f"under {', '.join(str(d) for d in self.dirs)}")

        expand(name, ())
        return list(out)

    def resolve(self, names: list[str], *, run: bool = True) -> list[TaskSpec]:
        """Expand task names, group names and ad-hoc specs into an ordered, de-duplicated list.
        Every unknown name is reported at once; two different tasks that would write the same
        result (one name) are an error naming both. A ``run: false`` group (read by reporting
        only) is an error unless ``run`` is False (selecting results, as `evalkit check --tasks`)."""
        out: dict[str, TaskSpec] = {}
        given: dict[str, str] = {}  # task name -> what on the command line produced it
        unknown: list[UnknownNameError] = []
        known = [*self.tasks, *self.aliases, *self.groups, *(WDS_PREFIX + m for m in self.mirrors)]

        def add(spec: TaskSpec, name: str) -> None:
            spec.fetch_specs()  # a bad fetch: block is said now, naming the file and the key
            if spec.name in out:
                # two ad-hoc specs of one name are one folder with one set of options (the name
                # hashes both); a task file's name is one task; an ad-hoc name taken by a task file
                # (or the reverse) is two tasks
                one = _adhoc(out[spec.name]) == _adhoc(spec) and (
                    _adhoc(spec) or (out[spec.name].source, out[spec.name].path) == (spec.source, spec.path))
                if not one:
                    raise TaskSpecError(f"--tasks {given[spec.name]} and {name} are two tasks named {spec.name!r}: "
                                        f"their results would replace each other; run them separately")
                return
            out[spec.name], given[spec.name] = spec, name

        def expand(name: str, stack: tuple[str, ...]) -> None:
            if name in stack:
                raise TaskSpecError(f"group cycle: {' -> '.join((*stack, name))}")
            if ":" in name and name.split(":", 1)[0] in ADHOC_PREFIXES:
                add(adhoc_spec(name), name)
            elif (spec := self.lookup(name)) is not None:
                add(spec, name)
            elif name in self.groups:
                group = self.groups[name]
                if run and not group.run:
                    inside = f" (in group {stack[-1]})" if stack else ""
                    raise TaskSpecError(
                        f"--tasks {stack[0] if stack else name}: group {name!r}{inside} ({group.path}) is read by "
                        f"`evalkit report` only (run: false): it names the tasks of the paper's aggregates; "
                        f"run its tasks by name or through a group that runs them "
                        f"(--tasks {','.join(group.tasks[:3])}{',...' if len(group.tasks) > 3 else ''})")
                for child in group.tasks:
                    expand(child, (*stack, name))
            elif name.startswith(WDS_PREFIX) and (spec := self.mirror(name[len(WDS_PREFIX):])) is not None:
                add(spec, name)
            else:
                unknown.append(UnknownNameError("task", name, known))

        for n in names:
            expand(n.strip(), ())
        if unknown:
            raise UnknownNameError.several("task", unknown, known)
        return list(out.values())


ADHOC_PREFIXES = ("wds", "folder", "hf", "captions", "videofolder", "pointfolder")
# --tasks videofolder:DIR without DIR/templates.txt: generic video prompts
VIDEO_TEMPLATES = ["a video of {c}.", "a video of a person {c}.", "a clip of {c}.", "a video showing {c}."]


def _alias_table(tasks: dict[str, TaskSpec], groups: dict[str, GroupSpec], origin: dict[str, Path]) -> dict[str, str]:
    """Alias -> task name. Tasks come in folder order (``--task-dir`` first): a name or alias an
    earlier folder uses wins over a later folder's alias; within one folder a clash is an error."""
    table: dict[str, str] = {}
    for spec in tasks.values():
        for alias in spec.aliases:
            taken = alias if alias in tasks or alias in groups else table.get(alias)
            if taken is None:
                table[alias] = spec.name
            elif origin.get(taken) == origin.get(spec.name) and taken != spec.name:
                what = "the name of a task or group" if alias in tasks or alias in groups else f"an alias of {taken}"
                other = (tasks.get(taken) or groups[taken]).path
                raise TaskSpecError(f"{spec.path}: alias {alias!r} is already {what} ({other})")
    return table


def _mirror_table(tasks: dict[str, TaskSpec]) -> dict[str, tuple[str, dict[str, Any]]]:
    """clip_benchmark WebDataset name -> (task, layout): a layout ``{type: wds, path: wds_vtab-x}``
    is the mirror ``vtab/x`` (clip_benchmark names its mirror folders ``wds_`` + the dataset name
    with ``/`` as ``-``; ``vtab/`` is the one prefix its names use)."""
    table: dict[str, tuple[str, dict[str, Any]]] = {}
    for spec in tasks.values():
        source = spec.source
        layouts = source.get("layouts", []) if source.get("type") == "any" else [source]
        for layout in layouts:
            if not isinstance(layout, dict) or layout.get("type") != "wds":
                continue
            paths = layout.get("path") or []
            for path in paths if isinstance(paths, list) else [paths]:
                folder = Path(str(path)).name
                if folder.startswith("wds_"):
                    name = folder[len("wds_"):]
                    name = "vtab/" + name[len("vtab-"):] if name.startswith("vtab-") else name
                    table.setdefault(name, (spec.name, layout))
    return table


def _mirror_fetch(spec: TaskSpec, layout: dict[str, Any], name: str) -> tuple[list[Any], bool]:
    """Where ``wds/NAME`` fetches its data: the task's own ``fetch:`` entry for that mirror's folder
    (its counts are the task's), else clip_benchmark's mirror ``clip-benchmark/wds_NAME`` (``/`` as
    ``-``, the name clip_benchmark's ``--dataset_root`` pattern gives it) into the folder the layout
    reads, whose counts are the mirror's own and not checked against the task's protocol."""
    from evalkit.data.fetch import HubSpec

    folder = "wds_" + name.replace("/", "-")
    paths = layout.get("path") or []
    relative = [str(p) for p in (paths if isinstance(paths, list) else [paths])
                if Path(str(p)).name == folder and not Path(str(p)).is_absolute()]
    own = [raw for raw, parsed in zip(spec.fetch, spec.fetch_specs(), strict=True)
           if isinstance(parsed, HubSpec) and parsed.path in relative]
    if own:
        return own, spec.fetch_checks_counts
    if not relative:
        return [], False
    return [{"repo": f"clip-benchmark/{folder}", "path": relative[0]}], False


def _adhoc(spec: TaskSpec) -> bool:
    """Whether ``spec`` came from an ad-hoc ``KIND:PATH`` (:func:`adhoc_spec`), not a task file."""
    return ":" in spec.path and spec.path.split(":", 1)[0] in ADHOC_PREFIXES


def adhoc_name(name: str) -> str:
    """The task (and result file) name of an ad-hoc spec: kind, folder name and a short hash of the
    folder's resolved path and options, so two folders called ``test`` never share a result:
    ``folder:/data/a/test`` -> ``folder_test-1f3a9c``. A WebDataset folder's ``wds_`` prefix is not
    repeated (``wds:/data/wds_cifar10`` -> ``wds_cifar10-…``)."""
    kind, rest = name.split(":", 1)
    path, _, query = rest.partition("?")
    base = Path(path).name or "data"
    if kind == "wds":
        base = base.removeprefix("wds_") or base
    opts = "&".join(sorted(kv for kv in query.split("&") if kv))
    where = f"{Path(path).expanduser().resolve()}?{opts}"
    return f"{kind}_{base}-{hashlib.sha256(where.encode()).hexdigest()[:6]}"


def adhoc_spec(name: str) -> TaskSpec:
    """``wds:/path``, ``folder:/path[?classnames=FILE]``, ``hf:/path``, ``videofolder:/path``,
    ``pointfolder:/path`` → a classification task spec (``captions:/path``: retrieval). Point clouds
    get Uni3D's 64 templates for a point tower, generic depth-map prompts for depth views, unless
    the folder has its own ``templates.txt``. A relative path is the current folder's, as any path
    typed on a command line (not the data root's, which is for task files): the folder read is the
    folder named (:func:`adhoc_name`)."""
    kind, rest = name.split(":", 1)
    path, _, query = rest.partition("?")
    path = str(Path(path).expanduser().resolve())
    opts = dict(kv.split("=", 1) for kv in query.split("&") if "=" in kv)
    source: dict[str, Any] = {"type": kind, "path": path, **opts}
    templates = None
    if kind in ("folder", "hf"):
        templates = ["a photo of a {c}."]  # wds folders carry their own templates
    # images + captions (captions:DIR, or a WebDataset that says dataset_type.txt: retrieval)
    retrieval = kind == "captions" or (kind == "wds" and _wds_dataset_type(Path(path)) == "retrieval")
    view: dict[str, Any] = {}
    if kind == "videofolder":
        view = {"kind": "frames"}  # its defaults: one middle frame, the family's transform
        if not (Path(path) / "templates.txt").is_file():
            templates = list(VIDEO_TEMPLATES)
    if kind == "pointfolder":  # clouds: the model's point tower, else depth views
        prompts = builtin_tasks_dir() / "templates"
        view = {"kind": "cloud", "depth_templates_file": str(prompts / "depth_maps.txt")}  # else its defaults
        if not (Path(path) / "templates.txt").is_file():
            templates = read_list_file(prompts / "modelnet40_64.txt", "templates", Path(name))
    return TaskSpec(
        name=adhoc_name(name),
        family="retrieval" if retrieval else "classification",
        metric="mean_recall" if retrieval else "acc1",
        source=source,
        templates=templates,
        description=f"ad-hoc {kind} dataset at {path}",
        path=name,
        view=view,
    )


def _wds_dataset_type(root: Path) -> str:
    try:
        return (root / "dataset_type.txt").read_text().strip().lower()
    except OSError:
        return "classification"
