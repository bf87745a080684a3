"""One fetch from one URL, in a child process with a deadline and a size cap.

The server and every mirror are untrusted: one may stall before or after its
ref advertisement, drip a byte a minute, or send a gigabyte.  dulwich's
transports have no overall deadline (an ssh:// fetch reads a pipe, a git://
fetch a socket, both blocking), so the fetch runs in a forked child, in a
session of its own: when ``repo.timeout`` passes, or the caller is told to
stop, the whole process group (ssh included) is killed and nothing is left
half-done in the store.

The child writes what it receives into a quarantine directory beside the
store (``incoming-*/objects``, whose alternates point at the store, so a thin
pack's bases resolve): the pack is counted against ``repo.max_fetch_bytes``
as it arrives, scanned so that no object inflates past that size
(``packscan.scan_pack``), then indexed.  The parent decides, after checking
the signature and the connectivity of what arrived, whether the pack moves
into the store (``GitStore.fetch``).  A refused or incomplete pack is
deleted with its quarantine: the store only ever holds complete histories.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dulwich.client import AbstractHttpGitClient, GitClient, get_transport_and_path
from dulwich.config import ConfigDict
from dulwich.errors import NotGitRepository
from dulwich.object_store import DiskObjectStore, ObjectStoreGraphWalker
from dulwich.objects import Commit, ObjectID
from dulwich.refs import Ref

from syncd.errors import (
    FetchError,
    FetchTooLargeError,
    NoBranchError,
    NotARepositoryError,
)
from syncd.git.failures import timed_out
from syncd.git.memcap import cap_memory, exhausted, memory_message
from syncd.git.packindex import add_pack
from syncd.git.packscan import PackFormatError, PackTooLargeError, scan_pack
from syncd.git.urls import local_path, redact_url

POLL_SECONDS = 0.2  # how often a waiting parent checks whether it was told to stop
RESULT_LIMIT = 64 << 10  # bytes of the child's report read at most
NO_REPOSITORY = (
    "no git repository there (no info/refs: check the URL; a static mirror needs "
    "`git update-server-info` run after each push, e.g. by its post-update hook)"
)


@dataclass(frozen=True, slots=True)
class FetchLimits:
    timeout: float = 60.0  # seconds for one URL, from connect to indexed pack
    max_bytes: int = 256 << 20  # bytes received from one URL; also the largest object
    ssh_command: str | None = None
    ca_file: Path | None = None
    progress: bool = False  # show the server's progress and the bytes received on stderr (a terminal)


@dataclass(frozen=True, slots=True)
class Received:
    """What one URL offered: its tip, and the quarantine holding the objects
    it sent (None when the store already had the tip)."""

    tip: str
    incoming: Path | None
    received_bytes: int = 0

    def discard(self) -> None:
        if self.incoming is not None:
            shutil.rmtree(self.incoming.parent, ignore_errors=True)


def fetch_url(
    url: str,
    ref: Ref,
    store_path: Path,
    heads: Sequence[ObjectID],
    limits: FetchLimits,
    cancel: Callable[[], bool] | None = None,
) -> Received:
    """Fetch ``ref`` from ``url`` into a new quarantine beside the store.

    ``heads`` are the commits offered as "have" (the store holds every object
    they reach).  Raises ``FetchTimeoutError``, ``FetchTooLargeError``,
    ``NoBranchError``, ``NotARepositoryError`` or ``FetchError``;
    ``KeyboardInterrupt`` when ``cancel()`` turns true (the child is killed
    either way)."""
    _local_repository(url)
    quarantine = Path(tempfile.mkdtemp(prefix="incoming-", dir=store_path.parent))
    objects = quarantine / "objects"
    try:
        (objects / "pack").mkdir(parents=True)
        (objects / "info").mkdir()
        (objects / "info" / "alternates").write_text(os.fspath((store_path / "objects").resolve()) + "\n")
        report = _run_child(_Job(url, ref, store_path, tuple(heads), limits, objects), cancel)
    except BaseException:
        shutil.rmtree(quarantine, ignore_errors=True)
        raise
    tip = report["tip"]
    assert isinstance(tip, str)
    if not report.get("new"):
        shutil.rmtree(quarantine, ignore_errors=True)
        return Received(tip, None)
    received = report.get("received", 0)
    return Received(tip, objects, received if isinstance(received, int) else 0)


@dataclass(frozen=True, slots=True)
class _Job:
    """One fetch, as the child process does it."""

    url: str
    ref: Ref
    store_path: Path
    heads: tuple[ObjectID, ...]  # "have": the store holds every object they reach
    limits: FetchLimits
    objects: Path  # the quarantine's object directory
    probe: bool = False  # only the ref advertisement: the tip, nothing fetched


def advertised_tips(
    urls: Sequence[str], ref: Ref, limits: FetchLimits, cancel: Callable[[], bool] | None = None
) -> list[str | FetchError]:
    """The tip of ``ref`` each URL advertises (or why it gave none): one
    refs request per URL, all at once, each in a child process of its own
    under the same ``repo.timeout``.  Nothing is fetched."""
    jobs: list[_Job | FetchError] = []
    for url in urls:
        try:
            _local_repository(url)
        except FetchError as exc:
            jobs.append(exc)
            continue
        jobs.append(_Job(url, ref, Path(), (), limits, Path(), probe=True))
    answers = iter(_run_children([j for j in jobs if isinstance(j, _Job)], cancel))
    tips: list[str | FetchError] = []
    for job in jobs:
        answer = job if isinstance(job, FetchError) else next(answers)
        tips.append(answer if isinstance(answer, FetchError) else str(answer["tip"]))
    return tips


def _run_child(job: _Job, cancel: Callable[[], bool] | None) -> Mapping[str, object]:
    answer = _run_children([job], cancel)[0]
    if isinstance(answer, FetchError):
        raise answer
    return answer


def _run_children(jobs: Sequence[_Job], cancel: Callable[[], bool] | None) -> list[Mapping[str, object] | FetchError]:
    """Run each job in a forked child, all at once; each child's report, or
    why it gave none (``FetchTimeoutError`` when ``repo.timeout`` passed
    first: the child's whole process group is killed)."""
    children: dict[int, tuple[int, _Job]] = {}  # read end -> (pid, job)
    data: dict[int, bytes] = {}
    try:
        for job in jobs:
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: never returns
                os.close(read_end)
                _child(job, write_end)
            os.close(write_end)
            children[read_end], data[read_end] = (pid, job), b""
        deadline = time.monotonic() + max((j.limits.timeout for j in jobs), default=0)
        waiting = set(children)
        while waiting:
            if cancel is not None and cancel():
                raise KeyboardInterrupt
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready, _, _ = select.select(sorted(waiting), [], [], min(POLL_SECONDS, remaining))
            for fd in ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    waiting.discard(fd)
                data[fd] += chunk[: max(0, RESULT_LIMIT - len(data[fd]))]
        answers: list[Mapping[str, object] | FetchError] = []
        for fd, (pid, job) in list(children.items()):
            shown = redact_url(job.url)
            if fd in waiting:
                _kill(pid)
                answers.append(timed_out(shown, job.limits.timeout))
            else:
                os.waitpid(pid, 0)
                try:
                    answers.append(_parse_report(data[fd], shown, job.limits))
                except FetchError as exc:
                    answers.append(exc)
            children[fd] = (0, job)
        return answers
    finally:
        for fd, (pid, _) in children.items():
            os.close(fd)
            if pid:
                _kill(pid)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _parse_report(data: bytes, shown: str, limits: FetchLimits) -> Mapping[str, object]:
    try:
        report = json.loads(data)
        kind, message = report["kind"], str(report.get("message", ""))
    except (ValueError, KeyError, TypeError):
        raise FetchError(f"{shown}: the fetch ended without a result") from None
    if kind == "ok":
        return dict(report)
    if kind == "no-branch":
        raise NoBranchError(f"{shown}: {message}")
    if kind == "too-large":
        raise FetchTooLargeError(f"{shown}: {message} (repo.max_fetch_bytes is {limits.max_bytes})")
    raise FetchError(f"{shown}: {message}")


def _child(job: _Job, report_fd: int) -> None:
    """The forked child: fetch, scan, index, report as one JSON object."""
    code = 1
    try:
        os.setsid()  # its own process group: ssh and friends die with it
        cap_memory(job.limits.max_bytes)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        report: dict[str, object] = {"kind": "ok", **(_probe(job) if job.probe else _fetch_into(job))}
        code = 0
    except (_TooLargeError, PackTooLargeError) as exc:
        report = {"kind": "too-large", "message": str(exc)}
    except MemoryError:
        report = {"kind": "failed", "message": memory_message(job.limits.max_bytes)}
    except NoBranchError as exc:
        report = {"kind": "no-branch", "message": exc.message}
    except NotGitRepository:  # over HTTP: info/refs is missing (404)
        report = {"kind": "failed", "message": NO_REPOSITORY}
    except FetchTooLargeError as exc:
        report = {"kind": "too-large", "message": exc.message}
    except FetchError as exc:
        report = {"kind": "failed", "message": exc.message}
    except PackFormatError as exc:
        report = {"kind": "failed", "message": f"the server sent a bad pack: {exc}"}
    except BaseException as exc:  # dulwich raises many kinds for network trouble
        if exhausted(job.limits.max_bytes):
            report = {"kind": "failed", "message": memory_message(job.limits.max_bytes)}
        else:
            report = {"kind": "failed", "message": f"{type(exc).__name__}: {_one_line(exc, job.url)}"}
    try:
        os.write(report_fd, json.dumps(report).encode()[:RESULT_LIMIT])
    finally:
        os._exit(code)


class _TooLargeError(Exception):
    pass


def _client(job: _Job) -> tuple[GitClient, str]:
    settings = ConfigDict()
    if job.limits.ca_file is not None:  # https:// with a private CA: git's http.sslCAInfo
        settings.set((b"http",), b"sslCAInfo", os.fsencode(job.limits.ca_file))
    return get_transport_and_path(job.url, config=settings, ssh_command=job.limits.ssh_command, quiet=True)


def _probe(job: _Job) -> dict[str, object]:
    """The child's refs request: the tip of ``job.ref``, nothing fetched."""
    client, path = _client(job)
    tip = client.get_refs(path.encode() if isinstance(path, str) else path, ref_prefix=[job.ref]).refs.get(job.ref)
    if tip is None:
        raise NoBranchError(f"the remote has no branch {job.ref.decode()}")
    return {"tip": tip.decode()}


def _fetch_into(job: _Job) -> dict[str, object]:
    ref, store_path, limits = job.ref, job.store_path, job.limits
    client, path = _client(job)
    store = DiskObjectStore(os.fspath(store_path / "objects"))
    found: dict[str, ObjectID] = {}
    meter = _Meter(limits)

    def wants(refs: Mapping[Ref, ObjectID], depth: int | None = None) -> list[ObjectID]:
        tip = refs.get(ref)
        if tip is None:
            raise NoBranchError(f"the remote has no branch {ref.decode()}")
        found["tip"] = tip
        if isinstance(client, AbstractHttpGitClient) and client.dumb:  # a static mirror: syncd walks it
            raise _StaticMirror
        return [] if tip in store else [tip]

    try:
        _fetch_pack(job, client, path, store, wants, meter)
    except _StaticMirror:
        assert isinstance(client, AbstractHttpGitClient)
        return _fetch_static(job, client, path, store, found["tip"], meter)
    if "tip" not in found:
        raise NoBranchError(f"the remote has no branch {ref.decode()}")
    tip = found["tip"]
    pack_path = job.objects / "incoming.pack"
    if meter.received == 0 or tip in store:  # nothing wanted (a server may still send an empty pack)
        pack_path.unlink()
        if tip not in store:
            raise FetchError(f"the remote advertised {tip.decode()} but sent nothing")
        return {"tip": tip.decode(), "new": False}
    with open(pack_path, "rb") as fh:
        scan_pack(fh, limits.max_bytes)
    incoming = DiskObjectStore(os.fspath(job.objects))
    with open(pack_path, "rb") as fh:
        add_pack(incoming, fh.read)  # indexed, not parsed: the parent parses what it reads
    pack_path.unlink()
    return {"tip": tip.decode(), "new": True, "received": meter.received}


class _StaticMirror(Exception):  # noqa: N818 -- a signal, not an error
    """Raised from the ref callback when the server turned out to be a static mirror."""


class _Meter:
    """Bytes received from one URL, against repo.max_fetch_bytes; shown as they grow."""

    def __init__(self, limits: FetchLimits) -> None:
        self.limits = limits
        self.received = 0

    def __call__(self, size: int) -> None:
        limits, received = self.limits, self.received
        if limits.progress and received >> 20 != (received + size) >> 20:
            os.write(2, f"\rsyncd: received {(received + size) >> 20} MiB ".encode())
        self.received += size
        if self.received > limits.max_bytes:
            raise _TooLargeError(f"the server sent more than {limits.max_bytes} bytes")

    def done(self) -> None:
        if self.limits.progress and self.received >= 1 << 20:
            os.write(2, b"\n")


def _fetch_pack(
    job: _Job,
    client: GitClient,
    path: str,
    store: DiskObjectStore,
    wants: Callable[..., list[ObjectID]],
    meter: _Meter,
) -> None:
    """The git protocol: negotiate from the store's heads, receive one pack into the quarantine."""

    def parents(sha: ObjectID) -> list[ObjectID]:
        obj = store[sha]
        return list(obj.parents) if isinstance(obj, Commit) else []

    walker = ObjectStoreGraphWalker(list(job.heads), parents)
    with open(job.objects / "incoming.pack", "wb") as out:

        def pack_data(data: bytes) -> int:
            meter(len(data))
            return out.write(data)

        def progress(message: bytes) -> None:  # the server's own ("Counting objects: 42% ...")
            os.write(2, b"\rremote: " + message.rstrip(b"\r\n")[:200] + b"\x1b[K")

        shown = progress if job.limits.progress else None
        client.fetch_pack(path, wants, walker, pack_data, shown, ref_prefix=[job.ref])
        meter.done()


def _fetch_static(
    job: _Job, client: AbstractHttpGitClient, path: str, store: DiskObjectStore, tip: ObjectID, meter: _Meter
) -> dict[str, object]:
    """A static mirror (dumb HTTP): only the objects the store lacks, walked from the tip."""
    from syncd.git.dumb import StaticMirror

    if tip in store:
        return {"tip": tip.decode(), "new": False}
    get = functools.partial(client._http_request, raise_for_status=False)  # the client's TLS, proxy and credentials
    mirror = StaticMirror(client._get_url(path), get, meter, job.limits.max_bytes, store, job.objects)
    try:
        mirror.fetch(tip)
    finally:
        mirror.close()
        meter.done()
    return {"tip": tip.decode(), "new": True, "received": meter.received}


def _one_line(exc: BaseException, url: str) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    return message.replace(url, redact_url(url))[:300]


def _local_repository(url: str) -> None:
    """A local URL must name a git repository (bare, or a clone's worktree)."""
    path = local_path(url)
    if path is None or ((path / "HEAD").is_file() and (path / "objects").is_dir()) or (path / ".git").exists():
        return
    what = "not a git repository" if path.is_dir() else "not a directory" if path.exists() else "no such directory"
    raise NotARepositoryError(f"{url}: {what}")
