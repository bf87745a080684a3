"""syncd's own store of the shared repository (``state_dir/repo.git``):
opened, fetched into, and set aside when damaged.  Reading it is
``repository.GitRepository``'s job (``GitStore.repository``).

The remote and every mirror are untrusted.  syncd keeps two local refs in
``state_dir/repo.git``, both under ``refs/heads/`` because that is where a
fetch looks for what it already has (so only new objects cross the network):

* ``refs/heads/syncd-applied``: the last commit installed.  It moves only
  when syncd applies a commit (``pin_applied``), so a force-push on the
  server can change what the remote *offers* but never rewinds what this
  node applied (the rollback guard itself reads the last applied commit
  from the state file);
* ``refs/heads/syncd-fetched``: the last tip fetched whose signature
  verified, so that a signed commit refused for its content is not
  downloaded again and again.

The store holds only complete histories: a fetch lands in a quarantine
(``fetch.py``) and its pack moves in only after the tip's signature verified
and every object the new commits reach is present (``objects.check_connected``).
A ref therefore never names a commit whose trees or blobs are missing, and
the next fetch's "have" lines are true.  A store found corrupt or missing
objects anyway (a disk error, an older syncd) is set aside and the next pass
fetches afresh (``set_aside``); the rollback anchor lives in ``state.json``.

Full history is fetched (no shallow clone): the rollback guard walks it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dulwich.errors import ObjectFormatException
from dulwich.object_store import DiskObjectStore
from dulwich.objects import ObjectID
from dulwich.refs import Ref
from dulwich.repo import Repo

from syncd.errors import FetchError, IncompleteError, SignatureError, StoreRepairedError, SyncdError
from syncd.git.failures import fetch_failure
from syncd.git.fetch import FetchLimits, Received, advertised_tips, fetch_url
from syncd.git.objects import check_connected, commit_info, complete, known_ids, object_id
from syncd.git.refnames import APPLIED_REF_NAME, FETCHED_REF_NAME
from syncd.git.repository import GitRepository
from syncd.signing.commits import CommitInfo

APPLIED_REF = Ref(APPLIED_REF_NAME.encode())
FETCHED_REF = Ref(FETCHED_REF_NAME.encode())
BROKEN_SUFFIX = ".broken"  # where a corrupt store is set aside (one kept, for a post-mortem)


@dataclass(frozen=True, slots=True)
class Offer:
    """What one URL offered in a fetch: the tip it advertises (its signature
    verified, its objects complete in the store), or why it offered none."""

    url: str  # redacted (``urls.redact_url``)
    tip: str | None
    error: SyncdError | None = None


class GitStore:
    """``state_dir/repo.git``: a bare repository only syncd writes to.

    Open it only while holding the network's lock (``state.locked``): it
    then clears what a crashed run may have left behind.
    """

    def __init__(self, path: Path, writes: Ref = APPLIED_REF) -> None:
        """Open (or create) the store.  ``writes`` is the ref the caller may
        move: the fetch phase (under ``fetch.lock``) the fetched ref, the
        apply phase (under the network's lock) the applied ref; a lock file
        of that ref left by a crashed run is cleared (dulwich would refuse to
        write the ref ever again), and only that one, since the other phase
        may be writing its own ref right now."""
        self.path = path
        if (path / "objects").is_dir():
            Path(path, os.fsdecode(writes) + ".lock").unlink(missing_ok=True)
            self.repo = Repo(str(path))
        else:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.repo = Repo.init_bare(str(path))
        store = self.repo.object_store
        assert isinstance(store, DiskObjectStore)
        self.store: DiskObjectStore = store
        self.repository = GitRepository(path, self.repo, store, self.repaired)  # its reading: the pass's port
        if writes == FETCHED_REF:  # quarantines of a fetch that died; none is in use under fetch.lock
            for stale in path.parent.glob("incoming-*"):
                shutil.rmtree(stale, ignore_errors=True)

    def close(self) -> None:
        self.repository.close()  # its open pack files, and the repository

    def set_aside(self) -> Path:
        """Move a damaged store out of the way; the next ``GitStore`` starts
        empty and the next fetch brings the whole history again."""
        self.close()
        broken = self.path.with_name(self.path.name + BROKEN_SUFFIX)
        shutil.rmtree(broken, ignore_errors=True)
        self.path.rename(broken)
        return broken

    def _ref(self, name: Ref) -> ObjectID | None:
        try:
            return self.repo.refs[name]
        except KeyError:
            return None

    def repaired(self, why: str) -> StoreRepairedError:
        broken = self.set_aside()
        return StoreRepairedError(
            f"the local store {self.path} was damaged: {why}. It was set aside as {broken.name}; "
            "the next pass fetches the repository afresh (the rollback anchor in state.json is kept)"
        )

    # --- fetching ---------------------------------------------------------------

    def fetch(
        self,
        urls: Sequence[str],
        branch: str,
        limits: FetchLimits,
        verify_tip: Callable[[CommitInfo], object],
        cancel: Callable[[], bool] | None = None,
    ) -> list[Offer]:
        """Ask every URL for ``branch`` and bring in what each offers.

        First every URL's refs request, all at once (``advertised_tips``;
        with a single URL, its fetch is its refs request): when the store
        holds a URL's tip, that is all the URL costs (its signature is
        verified, unless it is the applied commit).  A tip not held yet is
        fetched once, from the first URL advertising it, into a quarantine
        (deadline, size cap); ``verify_tip`` its commit (it raises
        ``SignatureError`` to refuse it) before anything else is read;
        check that every object the new commits need arrived; then move the
        objects in.  A URL that fails any step costs nothing more and its
        ``Offer`` says why.  Which offered tip is applied is the apply
        phase's choice (``sync.mirrors``).  Raises ``fetch_failure`` when no
        URL offered a tip."""
        from syncd.git.urls import redact_url

        ref = Ref(f"refs/heads/{branch}".encode())
        offers: list[Offer] = []
        # one URL: its fetch is its refs request (a second connection would cost more than it saves)
        advertising = advertised_tips(urls, ref, limits, cancel) if len(urls) > 1 else [None] * len(urls)
        for url, advertised in zip(urls, advertising, strict=True):
            shown = redact_url(url)
            if isinstance(advertised, FetchError):
                offers.append(Offer(shown, None, advertised))
                continue
            try:
                if advertised is not None and object_id(advertised) in self.store:  # only complete histories there
                    self._accept(Received(advertised, None), verify_tip)
                    offers.append(Offer(shown, advertised))
                else:
                    offers.append(Offer(shown, self._fetch_one(url, ref, limits, verify_tip, offers, cancel)))
            except (FetchError, SignatureError) as exc:
                offers.append(Offer(shown, None, _from(exc, shown)))
        if all(o.tip is None for o in offers):
            raise fetch_failure([o.error for o in offers if o.error is not None], branch)
        return offers

    def _fetch_one(
        self,
        url: str,
        ref: Ref,
        limits: FetchLimits,
        verify_tip: Callable[[CommitInfo], object],
        offers: list[Offer],
        cancel: Callable[[], bool] | None,
    ) -> str:
        """Fetch ``ref`` from ``url`` (its tip is not in the store): the tip,
        its objects moved in; raises ``FetchError`` or ``SignatureError``."""
        known = [sha for sha in map(self._ref, (APPLIED_REF, FETCHED_REF)) if sha is not None]
        known += [object_id(o.tip) for o in offers if o.tip is not None]
        heads = list(dict.fromkeys(known))
        received = fetch_url(url, ref, self.path, heads, limits, cancel)
        try:
            self._accept(received, verify_tip)
        except IncompleteError:
            if heads and not complete(self.store, heads):
                raise self.repaired("commits fetched before are missing objects") from None
            raise
        finally:
            received.discard()
        return received.tip

    def _accept(self, received: Received, verify_tip: Callable[[CommitInfo], object]) -> None:
        if received.incoming is None:
            if self._ref(APPLIED_REF) != object_id(received.tip):  # the applied tip was verified when applied
                verify_tip(self.repository.commit(received.tip))
            if self._ref(FETCHED_REF) != object_id(received.tip):  # a no-op pass writes nothing
                self.repo.refs[FETCHED_REF] = object_id(received.tip)
            return
        incoming = DiskObjectStore(os.fspath(received.incoming))
        try:
            if object_id(received.tip) not in incoming:  # an empty pack, or one without the tip
                raise IncompleteError(
                    f"incomplete answer: it advertised {received.tip[:12]} but its pack does not hold it "
                    "(nothing was kept)"
                )
            try:
                tip = commit_info(incoming, received.tip)
            except ObjectFormatException as exc:  # the pack was indexed, not parsed (packindex)
                raise IncompleteError(f"the tip {received.tip} does not parse: {exc} (nothing was kept)") from None
            verify_tip(tip)
            missing = check_connected(incoming, known_ids(self.store), object_id(received.tip))
        finally:
            incoming.close()
        if missing is not None:
            raise IncompleteError(f"incomplete answer: {missing} (nothing was kept)")
        for pack in sorted(received.incoming.glob("pack/pack-*"), key=lambda p: p.suffix != ".pack"):
            pack.rename(Path(self.store.pack_dir) / pack.name)  # the .pack before its .idx
        self.repo.refs[FETCHED_REF] = object_id(received.tip)

    def pin_applied(self, sha: str) -> None:
        """Keep the applied commit referenced in the store (see module doc)."""
        self.repo.refs[APPLIED_REF] = object_id(sha)


def _from(exc: FetchError | SignatureError, shown: str) -> SyncdError:
    """One URL's failure, naming it once."""
    if shown in exc.message:
        return exc
    if isinstance(exc, SignatureError):
        return SignatureError(f"{exc.message} (from {shown})")
    return type(exc)(f"{shown}: {exc.message}", reason=exc.reason, hint=exc.hint)
