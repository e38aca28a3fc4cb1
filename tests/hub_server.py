"""A small Hugging Face Hub on 127.0.0.1 for the data-fetch tests: enough of the Hub's HTTP API
for huggingface_hub (``HfApi.dataset_info``, ``HfApi.list_repo_tree``, ``hf_hub_download``) to
download from dataset repos that a test builds in memory, and a way to script how it misbehaves.

What it serves (the requests huggingface_hub 1.x/2.x makes; see its ``hf_api.py``,
``file_download.py`` and ``utils/_pagination.py``):

* ``GET /api/datasets/{repo}/revision/{rev}``: the repo's info (``sha``: the commit ``rev``
  resolves to, ``gated``, ``siblings``).
* ``GET /api/datasets/{repo}/tree/{rev}[/{path}]?recursive=&expand=``: the listing, one JSON page
  of ``page_size`` entries at a time, the next page named in a ``Link: <...>; rel="next"`` header.
  Files carry ``oid`` (the git blob id), ``size`` and, for LFS files, ``lfs: {oid: sha256, size,
  pointerSize}``.
* Model repos (``add_repo(..., repo_type="model")``) the same at ``/api/models/{repo}/revision/{rev}``,
  ``/api/models/{repo}/tree/{rev}[/{path}]`` and ``/{repo}/resolve/{rev}/{path}``.
* ``HEAD``/``GET /datasets/{repo}/resolve/{rev}/{path}``: the file, with ``X-Repo-Commit``,
  ``ETag`` (the blob id, or the sha256 for LFS files, which also get ``X-Linked-Etag`` and
  ``X-Linked-Size``), ``Content-Length``, ``Accept-Ranges`` and ``Range`` requests (206). The
  real Hub redirects LFS files to a CDN; here they are served in place, which huggingface_hub
  handles the same way (it downloads from the URL the HEAD answer names).

Errors answer as the Hub does, with ``X-Error-Code`` / ``X-Error-Message`` headers:
``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound`` (404) and ``GatedRepo`` (401 without a
token, 403 with a token that was not granted access).

Scripted behaviours (:meth:`LocalHub.script`), matched per (method, path) in order, each for a
number of requests: ``status`` (any status with headers, e.g. 429 + ``Retry-After``), ``cut``
(``Content-Length`` of the whole file, fewer bytes sent, connection closed; a range request past
the bytes the server has is answered 416), ``corrupt`` (the right length, other bytes),
``block`` (hold the answer until :meth:`release`, at most ``BLOCK_LIMIT_S``), ``missing``
(404 ``EntryNotFound`` although the listing has the file).

Every request is logged (:attr:`LocalHub.log`, :meth:`LocalHub.count`). The server runs in a daemon
thread, and stops by itself after ``lifetime_s`` if a test forgets to stop it.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

BLOCK_LIMIT_S = 30.0


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    files: dict[str, bytes]
    commit: str
    lfs_patterns: tuple[str, ...] = ("*.tar",)
    gated_token: str | None = None  # set: the repo is gated and only this token is granted access
    listing_overrides: dict[str, dict] = field(default_factory=dict)  # path -> fields to change in its entry
    repo_type: str = "dataset"  # or "model": served at the model routes only

    def is_lfs(self, path: str) -> bool:
        return any(fnmatch(path, p) for p in self.lfs_patterns)

    def entry(self, path: str) -> dict:
        data = self.files[path]
        out = {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": path}
        if self.is_lfs(path):
            out["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        out.update(self.listing_overrides.get(path, {}))
        return out

    def tree(self, folder: str, recursive: bool) -> list[dict] | None:
        """The listing of ``folder`` ("" = the root), folders first as the Hub lists them; None when
        no file lies under it."""
        prefix = f"{folder}/" if folder else ""
        under = sorted(p for p in self.files if p.startswith(prefix))
        if not under:
            return None
        dirs: set[str] = set()
        files = []
        for p in under:
            rest = p[len(prefix):]
            if "/" in rest and not recursive:
                dirs.add(prefix + rest.split("/")[0])
                continue
            if recursive:
                parts = rest.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    dirs.add(prefix + "/".join(parts[:i]))
            files.append(self.entry(p))
        folders = [{"type": "directory", "oid": git_blob_id(d.encode()), "size": 0, "path": d} for d in sorted(dirs)]
        return folders + files


@dataclass
class Rule:
    method: str  # GET, HEAD or * (both)
    repo_id: str
    path: str  # a file path in the repo, or "revision" / "tree" for the API endpoints
    action: str  # status, cut, corrupt, block, missing
    times: int | None = 1  # None: every matching request
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    cut_at: int = 0
    used: int = 0


@dataclass
class Request:
    method: str
    kind: str  # revision, tree, resolve, other
    repo_id: str
    path: str
    status: int
    at: float
    headers: dict[str, str]


class LocalHub:
    """The local Hub: ``with LocalHub() as hub: hub.add_repo(...); hub.url``."""

    def __init__(self, page_size: int = 1000, lifetime_s: float = 120.0) -> None:
        self.repos: dict[str, Repo] = {}
        self.rules: list[Rule] = []
        self.log: list[Request] = []
        self.page_size = page_size
        self.lifetime_s = lifetime_s
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._reached: dict[tuple[str, str], threading.Event] = {}
        self._server: ThreadingHTTPServer | None = None
        self._timer: threading.Timer | None = None

    # -- set-up ---------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes], *, gated_token: str | None = None,
                 lfs_patterns: tuple[str, ...] = ("*.tar",), repo_type: str = "dataset") -> Repo:
        digest = hashlib.sha1(repo_id.encode() + b"".join(
            p.encode() + hashlib.sha1(d).digest() for p, d in sorted(files.items()))).hexdigest()
        repo = Repo(repo_id, dict(files), digest, lfs_patterns, gated_token, repo_type=repo_type)
        self.repos[repo_id] = repo
        return repo

    def script(self, method: str, repo_id: str, path: str, action: str, *, times: int | None = 1,
               status: int = 0, headers: dict[str, str] | None = None, cut_at: int = 0) -> Rule:
        rule = Rule(method, repo_id, path, action, times, status, dict(headers or {}), cut_at)
        with self._lock:
            self.rules.append(rule)
        return rule

    def reached(self, method: str, path: str) -> threading.Event:
        """An event set when a ``method`` request for ``path`` (a file path) arrives."""
        with self._lock:
            return self._reached.setdefault((method, path), threading.Event())

    def release(self) -> None:
        """Let every blocked answer go."""
        self._released.set()

    # -- what happened --------------------------------------------------------------------
    def count(self, method: str | None = None, path: str | None = None, kind: str | None = None,
              status: int | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.log if (method is None or r.method == method)
                       and (path is None or r.path == path) and (kind is None or r.kind == kind)
                       and (status is None or r.status == status))

    def requests(self, kind: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.log if kind is None or r.kind == kind]

    # -- life -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start the hub first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> LocalHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True).start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._timer is not None:
            self._timer.cancel()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler ------------------------------------------------------------------
    def _rule_for(self, method: str, repo_id: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if (rule.method in (method, "*") and rule.repo_id == repo_id and rule.path == path
                        and (rule.times is None or rule.used < rule.times)):
                    rule.used += 1
                    return rule
        return None

    def _record(self, req: Request) -> None:
        with self._lock:
            self.log.append(req)
            event = self._reached.get((req.method, req.path))
        if event is not None and req.kind == "resolve":
            event.set()


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    repo_type = "dataset"  # of the request being answered (set by _parse)
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    # -- helpers -------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(status, body, {"X-Error-Code": code, "X-Error-Message": message, **(extra or {})})

    def _log(self, kind: str, repo_id: str, path: str, status: int) -> None:
        self.hub._record(Request(self.command, kind, repo_id, path, status, time.monotonic(), dict(self.headers)))

    def _parse(self) -> tuple[str, str, str, str, dict[str, list[str]]] | None:
        """(kind, repo_id, revision, path, query) of a Hub URL, or None."""
        url = urlsplit(self.path)
        parts = url.path.split("/")
        query = parse_qs(url.query)
        # /api/(datasets|models)/{org}/{name}/(revision|tree)/{rev}[/{path}]
        if len(parts) >= 7 and parts[1] == "api" and parts[2] in ("datasets", "models") and parts[5] in ("revision", "tree"):
            self.repo_type = "dataset" if parts[2] == "datasets" else "model"
            repo_id = f"{parts[3]}/{parts[4]}"
            rev = unquote(parts[6])
            path = unquote("/".join(parts[7:])) if len(parts) > 7 else ""
            return parts[5], repo_id, rev, path, query
        # /datasets/{org}/{name}/resolve/{rev}/{path}
        if len(parts) >= 7 and parts[1] == "datasets" and parts[4] == "resolve":
            self.repo_type = "dataset"
            return "resolve", f"{parts[2]}/{parts[3]}", unquote(parts[5]), unquote("/".join(parts[6:])), query
        # /{org}/{name}/resolve/{rev}/{path}: a model repo
        if len(parts) >= 6 and parts[1] not in ("api", "datasets") and parts[3] == "resolve":
            self.repo_type = "model"
            return "resolve", f"{parts[1]}/{parts[2]}", unquote(parts[4]), unquote("/".join(parts[5:])), query
        return None

    def _commit(self, repo: Repo, rev: str) -> str | None:
        return repo.commit if rev in ("main", repo.commit) else None

    # -- verbs ------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802 (the stdlib's name)
        self._answer()

    def do_GET(self) -> None:  # noqa: N802
        self._answer()

    def _answer(self) -> None:
        parsed = self._parse()
        if parsed is None:
            self._log("other", "", self.path, 404)
            self._error(404, "NotFound", f"no route {self.path}")
            return
        kind, repo_id, rev, path, query = parsed
        status = self._serve(kind, repo_id, rev, path, query)
        self._log(kind, repo_id, path if kind == "resolve" else kind, status)

    def _serve(self, kind: str, repo_id: str, rev: str, path: str, query: dict[str, list[str]]) -> int:
        hub = self.hub
        rule = hub._rule_for(self.command, repo_id, path if kind == "resolve" else kind)
        if rule is not None and rule.action == "status":
            self._error(rule.status, "Scripted", f"scripted {rule.status}", rule.headers)
            return rule.status
        if rule is not None and rule.action == "block":
            hub._record(Request(self.command, "resolve-blocked", repo_id, path, 0, time.monotonic(), {}))
            event = hub._reached.get((self.command, path))
            if event is not None:
                event.set()
            hub._released.wait(BLOCK_LIMIT_S)
        repo = hub.repos.get(repo_id)
        if repo is None or repo.repo_type != self.repo_type:
            self._error(404, "RepoNotFound", "Repository not found")
            return 404
        commit = self._commit(repo, rev)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return 404
        if kind == "revision":
            info = {"id": repo_id, "sha": commit, "private": False, "disabled": False,
                    "gated": "manual" if repo.gated_token else False,
                    "siblings": [{"rfilename": p} for p in sorted(repo.files)]}
            self._send(200, json.dumps(info).encode())
            return 200
        if kind == "tree":
            return self._tree(repo, commit, path, query)
        return self._resolve(repo, commit, path, rule)

    def _tree(self, repo: Repo, commit: str, path: str, query: dict[str, list[str]]) -> int:
        recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
        entries = repo.tree(path, recursive)
        if entries is None:
            self._error(404, "EntryNotFound", f"{path} does not exist on {commit}")
            return 404
        start = int(query.get("cursor", ["0"])[0])
        page = entries[start:start + self.hub.page_size]
        headers = {}
        if start + self.hub.page_size < len(entries):
            where = f"/api/{repo.repo_type}s/{repo.repo_id}/tree/{commit}" + (f"/{quote(path, safe='')}" if path else "")
            nxt = f"{self.hub.url}{where}?recursive={str(recursive).lower()}&cursor={start + self.hub.page_size}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        self._send(200, json.dumps(page).encode(), headers)
        return 200

    def _resolve(self, repo: Repo, commit: str, path: str, rule: Rule | None) -> int:
        if path not in repo.files or (rule is not None and rule.action == "missing"):
            self._error(404, "EntryNotFound", f"{path} does not exist", {"X-Repo-Commit": commit})
            return 404
        if repo.gated_token is not None:
            auth = self.headers.get("Authorization", "")
            if not auth:
                self._error(401, "GatedRepo", f"Access to dataset {repo.repo_id} is restricted. You must have "
                            "access to it and be authenticated to access it. Please log in.")
                return 401
            if auth != f"Bearer {repo.gated_token}":
                self._error(403, "GatedRepo", f"Access to dataset {repo.repo_id} is restricted and you are not "
                            "in the authorized list. Visit the dataset page to ask for access.")
                return 403
        data = repo.files[path]
        entry = repo.entry(path)
        etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if "lfs" in entry:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
        have = data
        if rule is not None and rule.action == "cut":
            have = data[:rule.cut_at]
            rule.times = None  # the server has lost the tail for good: every later request sees it too
            rule.used = 0
        if rule is not None and rule.action == "corrupt":
            have = bytes(b ^ 0xFF for b in data)
        start = 0
        status = 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            first, _, last = rng[len("bytes="):].partition("-")
            start = int(first or 0)
            end = int(last) if last else len(data) - 1
            if start >= len(have):
                self._error(416, "RangeNotSatisfiable", f"range {rng} past the end",
                            {"Content-Range": f"bytes */{len(have)}"})
                return 416
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            body_len = end - start + 1
        else:
            body_len = len(data)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(body_len))
        if len(have) < len(data):
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "GET":
            chunk = have[start:start + body_len]
            try:
                self.wfile.write(chunk)
                self.wfile.flush()
            except OSError:  # the client went away (a killed fetch)
                pass
            if len(chunk) < body_len:  # cut short: close without the rest
                self.close_connection = True
        return status


# -- clip_benchmark-style WebDataset repos ---------------------------------------------------------------


def tiny_png(seed: int, size: int = 8) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (size, size), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def wds_shard(samples: Iterable[tuple[str, bytes, int]], ext: str = "png") -> bytes:
    """A tar of ``{key}.{ext}`` + ``{key}.cls`` members, as clip_benchmark's shards are."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, image, label in samples:
            for name, data in ((f"{key}.{ext}", image), (f"{key}.cls", str(label).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def wds_repo_files(n_samples: int = 12, n_shards: int = 3, classes: list[str] | None = None,
                   templates: list[str] | None = None, split: str = "test", nshards: int | None = None,
                   ext: str = "png", pad: int = 0) -> dict[str, bytes]:
    """The files of a ``clip-benchmark/wds_<name>`` repo: ``<split>/0.tar..`` (samples dealt out
    in order), ``<split>/nshards.txt`` (``nshards``, default the real count), ``classnames.txt``,
    ``zeroshot_classification_templates.txt``, a README and a ``train`` split that a fetch of
    ``test`` must leave alone. ``pad``: bytes of padding per sample (a bigger shard)."""
    classes = classes or ["cat", "dog", "bird"]
    templates = templates or ["a photo of a {c}.", "a drawing of a {c}."]
    per = -(-n_samples // n_shards)
    files: dict[str, bytes] = {}
    for s in range(n_shards):
        keys = range(s * per, min(n_samples, (s + 1) * per))
        files[f"{split}/{s}.tar"] = wds_shard(
            ((f"s{k:05d}", tiny_png(k) + bytes(pad), k % len(classes)) for k in keys), ext)
    files[f"{split}/nshards.txt"] = f"{n_shards if nshards is None else nshards}\n".encode()
    files["classnames.txt"] = ("\n".join(classes) + "\n").encode()
    files["zeroshot_classification_templates.txt"] = ("\n".join(templates) + "\n").encode()
    files["README.md"] = b"# a test mirror\n"
    if split != "train":
        files["train/0.tar"] = wds_shard([("t00000", tiny_png(999), 0)], ext)
        files["train/nshards.txt"] = b"1\n"
    return files
