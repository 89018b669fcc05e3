"""The generation service: ``Studio``, the one object every front end uses (CLI, library, Streamlit,
Gradio, batch jobs). It owns the settings, the catalog, the styles, the storage and the provider
instances, and runs a request in numbered steps (``Studio.generate``); each step's work lives in
its own module:

- ``studio.validation`` checks and fills in the request, ``studio.cache_keys`` names it for the
  cache, ``studio.budget`` reserves and books its cost (prices: ``studio.costs``);
- ``studio.saving`` decodes, post-processes, encodes and writes the images; ``studio.records``
  builds their records and the request's audit row;
- ``studio.rerun`` reads an image's metadata back into a request.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import providers as provider_registry
from providers.base import Provider, ProviderStatus, UNAVAILABLE
from studio import budget, cache_keys, costs, rerun, saving
from studio.cache_keys import SOURCES_PREFIX
from studio.catalog import Catalog
from studio.contentfilter import ContentFilter
from studio.copies import note_deleted
from studio.config import SECRET_NAMES, Settings
from studio.errors import (ContentBlocked, InvalidRequest, NotFound, ProviderFailure, StorageError,
                           StudioError, missing_file)
from studio.identity import may_change, visible_to, without_embedded_owner
from studio.masks import kept_size
from studio.netfetch import fetch_url, is_url
from studio.records import RunFacts, audit, generation_row, utc_now
from studio.redaction import mask_secrets
from studio.storage import HistoryQuery, Page, RepairReport, Storage, file_store_for
from studio.storage.index import HistoryIndex
from studio.styles import StyleBook
from studio.types import (GenerationRequest, ImageInput, ImageRecord, Mode, ProgressCallback, ProgressEvent,
                          ProviderResult, RunContext)
from studio.validation import Prepared, clean_category, clean_tags, prepare

log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass
class GenerationResult:
    images: list[ImageRecord]
    cost: float
    estimated_cost: float
    cached: bool
    request_id: str
    duration: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"images": [r.summary() for r in self.images], "cost": round(self.cost, 6),
                "estimated_cost": round(self.estimated_cost, 6), "cached": self.cached,
                "request_id": self.request_id, "duration": round(self.duration, 3), "warnings": self.warnings}


class Studio:
    def __init__(self, home: str | Path | None = None, *, settings: Settings | None = None):
        self.settings = settings or Settings.load(home)
        self.home = self.settings.home
        self.home.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.home / "catalog")
        self.styles = StyleBook(self.home)
        self.content_filter = ContentFilter(self.home)
        self.storage = Storage(self.home, files=file_store_for(self.settings),
                               index=HistoryIndex.for_settings(self.settings),
                               stale_after=self.settings.job_stale_seconds)
        self.recovered = self.storage.recover_interrupted()
        self._providers: dict[str, Provider] = {}
        self._providers_lock = threading.Lock()

    # -- providers ----------------------------------------------------------------------------

    def provider(self, name: str | None = None) -> Provider:
        name = (name or self.settings.default_provider).strip().lower()
        with self._providers_lock:
            if name not in self._providers:
                factory = provider_registry.factory_for(name)
                if factory is None:
                    raise InvalidRequest(f"unknown provider {name!r}; choose one of "
                                         f"{', '.join(provider_registry.names())}")
                self._providers[name] = factory(self.settings, self.catalog)
            return self._providers[name]

    def provider_statuses(self) -> list[ProviderStatus]:
        statuses = []
        for name in provider_registry.names():
            try:
                statuses.append(self.provider(name).status())
            except Exception as exc:  # one broken provider never hides the others
                statuses.append(ProviderStatus(name, name, UNAVAILABLE, self.redact(f"{type(exc).__name__}: {exc}")))
        return statuses

    # -- preparing ----------------------------------------------------------------------------

    def prepare(self, request: GenerationRequest) -> Prepared:
        # An input image or mask given as a URL is fetched here, through the SSRF-safe fetcher.
        for name in ("init_image", "mask"):
            if is_url(getattr(request, name)):
                request = request.replace(**{name: fetch_url(getattr(request, name))})
        provider = self.provider(request.provider)
        # No model named: the provider's default for this kind of work (its text-to-image default may not edit).
        model = provider.model(request.model, request.user, Mode.parse(request.mode).value)
        return prepare(request, provider.name, model, self.styles, seed_space=provider.seed_space,
                       server_files=self.settings.local_free_paths)

    def estimate(self, request: GenerationRequest) -> float:
        """Expected USD of ``request``, input included (prompt and input-image tokens where billed):
        the figure the UIs show before the click. Raises what ``prepare`` raises for a bad request."""
        return self.quote(request).estimate

    def quote(self, request: GenerationRequest, *, timeout: float | None = None) -> costs.CostQuote:
        """Expected and most USD of ``request`` (``bound`` is what the daily budget reserves);
        ``timeout`` in seconds, default the studio's request timeout."""
        return costs.quote(self.prepare(request).request, timeout=timeout or self.settings.request_timeout)

    # -- generating ---------------------------------------------------------------------------

    def generate(self, request: GenerationRequest, *, progress: ProgressCallback | None = None,
                 cancel: threading.Event | None = None, timeout: float | None = None,
                 request_id: str | None = None) -> GenerationResult:
        """Run one request (``timeout`` in seconds, default the studio's request timeout). ``request_id``
        (optional, unique) names the request in the audit log and on its images; a batch job passes
        its item's id so that after a crash it can find the images an interrupted item already saved
        instead of paying for them again. Raises InvalidRequest, ContentBlocked, BudgetExceeded before
        anything is paid; provider errors (any other exception as ProviderFailure) after step 3, each
        recorded in the audit log with what it cost."""
        # 1 check inputs: nothing is reserved or paid for a request refused here
        run = self._check_inputs(request, request_id, timeout or self.settings.request_timeout)
        # 2 cache
        cached = self._from_cache(run, request)
        if cached is not None:
            return cached
        # 3 reserve budget: the most the request can cost, until its audit row replaces the reservation
        reservation = budget.reserve(self.storage, run, self.settings.daily_budget)
        ctx = RunContext(progress=_staged(progress), cancel=cancel or threading.Event(), timeout=run.timeout)
        result: ProviderResult | None = None  # what the provider answered, once it has
        storing = False  # steps 7-8: a failure there is the studio's storage, not the provider
        try:
            # 4 run provider
            result = self._run_provider(run, ctx)
            ctx.report("saving", 0.0, message="saving images")
            # 5 decode and post-process
            images = saving.decode_all(run, result)
            # 6 encode with metadata: each image's record (booked at the actual cost), file and thumbnail
            cost = budget.booked_cost(run, result)
            seed_space = self.provider(run.prepared.provider).seed_space
            saved = saving.encode_all(run, result, images, cost=cost, seed_space=seed_space)
            # 7 write files
            storing = True
            saving.write_files(self.storage, run, saved)
            # 8 commit rows
            records = self._commit(run, saved, cost)
        except StudioError as error:
            if isinstance(error, StorageError):
                error = self._storage_failure(run, error)
                self._record_failure(run, error, result, reservation)
                raise error from error.__cause__
            self._record_failure(run, error, result, reservation)
            raise
        except Exception as exc:
            if storing or _is_database_error(exc):
                error = self._storage_failure(run, exc)
            else:
                error = ProviderFailure(f"{run.prepared.provider} failed: {type(exc).__name__}: {exc}",
                                        provider=run.prepared.provider)
            self._record_failure(run, error, result, reservation)
            raise error from exc
        finally:
            self.storage.end_request(reservation)  # this process's heartbeat may stop (storage.liveness)
        ctx.report("done", 1.0, message=f"{len(records)} image(s) saved")
        return GenerationResult(records, sum(r.cost for r in records), run.quote.estimate, False, run.request_id,
                                run.elapsed(), run.warnings)

    def _check_inputs(self, request: GenerationRequest, request_id: str | None, timeout: float) -> RunFacts:
        """Step 1: the request validated and filled in (``prepare``), its tags, category and parent
        checked, its cost quoted, the content policy applied, its cache key named, and the metadata
        its images will carry checked to fit their format. Nothing is reserved or paid yet."""
        started = time.monotonic()
        if request_id is not None and not _REQUEST_ID.fullmatch(request_id):
            raise InvalidRequest("request_id must be 1-64 letters, digits, '.', '_' or '-'")
        prepared = self.prepare(request)
        tags, category = clean_tags(request.tags), clean_category(request.category)
        parent = self._visible_parent(request.parent_id, prepared.request.user)
        # The most this request can cost is reserved against the budget; the estimate is recorded beside it.
        quote = costs.quote(prepared.request, timeout=timeout)
        run = RunFacts(request_id or secrets.token_hex(8), prepared.request, prepared.record_mode, prepared.warnings,
                       quote, timeout, started, tags=tags, category=category, parent=parent)
        self._check_content(run)
        # An edit's input image and mask, as PNG: kept with its images (for re-runs) and hashed for the cache.
        run.sources = cache_keys.edit_sources(run.prepared)
        run.cache_key = cache_keys.cache_key(run.prepared, run.sources)
        # An edit's result is brought back to its input's size: that is the size stored, checked here.
        run.keep_size = kept_size(run.prepared.mode, run.prepared.init_image, size_asked=request.width is not None)
        # Nothing is paid for that cannot be kept: the texts each image will carry must fit its format.
        saving.check_metadata_fits(run)
        return run

    def _check_content(self, run: RunFacts) -> None:
        """The operator's content policy, which applies to stored results too; a blocked prompt is
        recorded as a failed request (ContentBlocked raised)."""
        try:
            self.content_filter.check(run.prepared.prompt)
        except ContentBlocked as error:
            audit(self.storage.index, run, "failed", error=error, estimate=run.quote.estimate, duration=run.elapsed())
            raise

    def _from_cache(self, run: RunFacts, request: GenerationRequest) -> GenerationResult | None:
        """Step 2: the user's earlier images of the same request, when the cache applies
        (``cache_keys.wanted``) and holds enough of them; None otherwise."""
        if not cache_keys.wanted(request, run.prepared):
            return None
        hits = self.storage.index.by_cache_key(run.prepared.user, run.cache_key)
        if len(hits) < run.prepared.n:
            return None
        audit(self.storage.index, run, "cached", cost=0.0, estimate=run.quote.estimate, duration=run.elapsed(),
              cached=True)
        return GenerationResult([self.storage.with_path(r) for r in hits[:run.prepared.n]], 0.0, run.quote.estimate,
                                True, run.request_id, run.elapsed(), run.warnings)

    def _run_provider(self, run: RunFacts, ctx: RunContext) -> ProviderResult:
        """Step 4: the provider's answer, with at least one image (else ProviderFailure); its
        warnings join the request's, which are returned with the result and shown by every front end."""
        prepared = run.prepared
        ctx.report("initializing", 0.0, message=f"{prepared.provider} / {prepared.model.id}")
        ctx.check_cancelled()
        result = self.provider(prepared.provider).generate(prepared, ctx)
        run.answered()
        run.warnings.extend(w for w in result.warnings if w not in run.warnings)
        if not result.images:
            raise ProviderFailure("the provider returned no images", provider=prepared.provider)
        return result

    def _commit(self, run: RunFacts, saved: list[tuple[ImageRecord, bytes, bytes]], cost: float) -> list[ImageRecord]:
        """Step 8: the saved images' rows and the request's audit row (booked at ``cost`` USD), in
        place of its budget reservation, in one transaction; returns the images' records."""
        records = [record for record, _data, _thumb in saved]
        row = generation_row(run, "completed", cost=cost, estimate=run.quote.estimate, duration=run.elapsed())
        row["n"] = len(records)
        self.storage.index.finish_generation(run.request_id, records, row)
        return records

    def _storage_failure(self, run: RunFacts, exc: BaseException) -> StorageError:
        """The error a caller sees when the image store or the database failed while a request's
        images were saved: generic (a database's text quotes SQL and row values such as the owner's
        id; a store's names buckets and keys), the full text only in the server log, redacted."""
        log.error("request %s: saving its images failed: %s", run.request_id,
                  self.redact(f"{type(exc).__name__}: {exc}"))
        error = StorageError("the images could not be saved: the studio's storage is unavailable right now "
                             "(the provider may have billed the request); try again later",
                             provider=run.prepared.provider)
        error.__cause__ = exc
        return error

    def _record_failure(self, run: RunFacts, error: StudioError, result: ProviderResult | None,
                        reservation: str) -> None:
        """Record a request that failed after its reservation: its error message redacted (records are
        read by visitors, API clients and webhook receivers), booked at what it was billed
        (``budget.billed_on_failure``), in place of the reservation."""
        error.message = self.redact(error.message)
        audit(self.storage.index, run, "failed", error=error, estimate=run.quote.estimate,
              cost=budget.billed_on_failure(run, error, result), duration=run.elapsed(), reservation=reservation)

    def _visible_parent(self, parent_id: str | None, user: str) -> ImageRecord | None:
        if not parent_id:
            return None
        return self.get_image(parent_id, user)

    # -- edits and variations -----------------------------------------------------------------

    def resolve_image(self, source: ImageInput | str, user: str = "local") -> tuple[Any, ImageRecord | None]:
        """An image given as a stored image id, a file path, bytes or a Pillow image.

        Returns (image input, the stored record when the source was one of the user's images)."""
        if is_url(source):
            return fetch_url(source), None
        if isinstance(source, str) and not Path(source).exists():
            if _looks_like_path(source):  # ids are hex; calling a missing file an "image id" misleads
                raise missing_file(source)
            record = self.get_image(source, user)
            return self.storage.read(record), record
        return source, None

    def edit(self, image: ImageInput | str, prompt: str, *, mask: ImageInput | None = None,
             strength: float | None = None, progress: ProgressCallback | None = None,
             cancel: threading.Event | None = None, **options: Any) -> GenerationResult:
        user = options.get("user", "local")
        source, record = self.resolve_image(image, user)
        mode = Mode.INPAINT if mask is not None else Mode.IMAGE_TO_IMAGE
        request = GenerationRequest(prompt=prompt, mode=mode, init_image=source, mask=mask, strength=strength,
                                    parent_id=record.id if record else None, **options)
        return self.generate(request, progress=progress, cancel=cancel)

    def variations(self, source: ImageInput | str | None = None, *, prompt: str | None = None, n: int = 4,
                   strength: float | None = None, scene: bool = False, progress: ProgressCallback | None = None,
                   cancel: threading.Event | None = None, **options: Any) -> GenerationResult:
        """N variations of an image (img2img with new seeds) or of a prompt (new seeds). With ``scene``,
        each variation adds a framing or lighting modifier to the prompt (wide shot, close-up, ...)."""
        user = options.get("user", "local")
        record = None
        init = None
        made_with = None
        if source is not None:
            init, record = self.resolve_image(source, user)
            made_with = rerun.made_with(init, record, user, self.storage)
        if made_with is not None:
            # Re-use what made the source unless the caller says otherwise (None means "not said").
            prompt = prompt or made_with.prompt
            inherited = {"provider": made_with.provider, "model": made_with.model, "style": made_with.style,
                         "negative_prompt": made_with.negative_prompt}
            if options.get("provider") not in (None, made_with.provider):
                inherited["model"] = None  # another provider: its own default model
            for name, value in inherited.items():
                if options.get(name) in (None, ""):
                    options[name] = value
        if not prompt:
            raise InvalidRequest("a variation needs a prompt (or a stored image that has one)")
        base = GenerationRequest(prompt=prompt, mode=Mode.VARIATION, init_image=init, strength=strength,
                                 parent_id=record.id if record else None, **options)
        if not scene:
            return self.generate(base.replace(n=n, seed=None), progress=progress, cancel=cancel)
        modifiers = self.styles.scene_variations()
        if not 1 <= n <= len(modifiers):
            raise InvalidRequest(f"scene variations: n must be 1-{len(modifiers)}")
        results = []
        for index, modifier in enumerate(modifiers[:n]):
            sub = _sub_progress(progress, index, n)
            request = base.replace(prompt=f"{prompt}, {modifier['modifier']}", n=1, seed=None,
                                   tags=[*base.tags, f"scene:{modifier['name']}"])
            results.append(self.generate(request, progress=sub, cancel=cancel))
        return GenerationResult(
            images=[img for r in results for img in r.images], cost=sum(r.cost for r in results),
            estimated_cost=sum(r.estimated_cost for r in results), cached=all(r.cached for r in results),
            request_id=results[0].request_id, duration=sum(r.duration for r in results),
            warnings=sorted({w for r in results for w in r.warnings}))

    # -- history ------------------------------------------------------------------------------

    def history(self, query: HistoryQuery | None = None, **filters: Any) -> Page:
        return self.storage.query(query or HistoryQuery(**filters))

    def get_image(self, image_id: str, user: str = "local") -> ImageRecord:
        record = self.storage.get(str(image_id).strip())
        if record is None or not visible_to(record, user):
            raise NotFound(f"no image with id {image_id!r}")
        return record

    def image_bytes(self, record: ImageRecord) -> bytes:
        """The image file as it may leave the server: what is stored, minus the owner id that files
        written by earlier versions embedded (blanked in place; pixels and size unchanged)."""
        return without_embedded_owner(self.storage.read(record))

    def delete_image(self, image_id: str, user: str = "local") -> None:
        record = self.get_image(image_id, user)
        if not may_change(record, user):
            raise NotFound(f"no image with id {image_id!r}")
        self.storage.delete(record)
        # An edit's kept input goes with the last image made from it (deleted means gone).
        for name in ("source_image", "source_mask"):
            key = record.params.get(name)
            if isinstance(key, str) and key.startswith(f"{SOURCES_PREFIX}/") \
                    and not self.storage.index.count_params_naming(key):
                self.storage.files.delete(key)
        note_deleted(self.home, record.id)  # front ends drop their served copies of it, even later

    def update_image(self, image_id: str, user: str = "local", **fields: Any) -> ImageRecord:
        record = self.get_image(image_id, user)
        if not may_change(record, user):
            raise NotFound(f"no image with id {image_id!r}")
        if "tags" in fields:
            fields["tags"] = clean_tags(fields["tags"], keep=record.tags)  # a schedule's tag may stay
        if "category" in fields:
            fields["category"] = clean_category(fields["category"])
        self.storage.index.update_image(image_id, **fields)
        return self.get_image(image_id, user)

    def repair(self, fix: bool = False) -> RepairReport:
        return self.storage.repair(fix=fix)

    def spent_today(self) -> float:
        return self.storage.index.spent_on(utc_now().date().isoformat())

    def stats(self, days: int = 7, owner: str | None = None):
        """Per-model figures from the audit log: requests, success rate, time, cost per image."""
        from studio.monitoring import model_stats

        return model_stats(self.storage.index, days=days, owner=owner)

    def alerts(self):
        """What needs attention: repeated failures, budget, slow APIs, quota."""
        from studio.monitoring import alerts

        return alerts(self.storage.index, daily_budget=self.settings.daily_budget, today_spent=self.spent_today(),
                      ready=self._ready_now)

    def _ready_now(self, provider: str) -> bool:
        """Whether ``provider`` is set up now (an alert about its missing setup is then out of date)."""
        try:
            return self.provider(provider).status().ready
        except Exception:  # an unknown or broken provider is not ready; its status says why elsewhere
            log.debug("status of %s failed", provider, exc_info=True)
            return False

    # -- metadata -----------------------------------------------------------------------------

    def info(self, source: ImageInput | str, user: str = "local") -> dict[str, Any]:
        """Metadata embedded in an image file (or a stored image, by id): ``read_metadata``'s answer
        (``generation`` in one shape whichever tool wrote the file, or ``note`` saying why none)."""
        image, _record = self.resolve_image(source, user)
        return rerun.info_of(image)

    def request_from_image(self, source: ImageInput | str, user: str = "local", *,
                           inputs: bool = True) -> GenerationRequest:
        """A request that re-runs an image with the same parameters, from its embedded metadata: the
        same mode, and for an edit, inpaint or image variation the same input image, mask and
        strength. Raises InvalidRequest when the image carries nothing to re-run, and when an edit's
        input is not kept any more (or was never kept, or belongs to an image this user cannot see).
        With ``inputs=False``: only the text-to-image parameters (prompt, model, seed...), for a
        caller that brings its own image or wants a fresh generation from the same settings."""
        image, record = self.resolve_image(source, user)
        return rerun.request_from(rerun.info_of(image), record, user, self.storage, inputs=inputs)

    # -- housekeeping -------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """Remove any configured secret from ``text`` (error messages can echo request headers), and
        write the data directory as ``<data>`` (an OSError names the file it failed on): error texts
        are kept in records that visitors, API clients and webhook receivers read."""
        for home in sorted({str(self.home), str(Path(self.home).resolve())}, key=len, reverse=True):
            text = text.replace(home, "<data>")
        keys = [self.settings.secret(name) for name in SECRET_NAMES] + list(self.settings.session_keys.values())
        return mask_secrets(text, keys)  # the providers' scrub uses the same rule and minimum

    def clear_model_cache(self) -> None:
        """Unload every locally loaded model (shared by the whole process) and free its memory."""
        for provider in list(self._providers.values()):
            clear = getattr(provider, "clear_cache", None)
            if clear is not None:
                clear()

    def close(self) -> None:
        for provider in self._providers.values():
            provider.close()
        self.storage.close()


def _looks_like_path(text: str) -> bool:
    """Whether ``text`` names a file rather than a stored image id (ids are hex, with no separators
    or extension)."""
    return any(mark in text for mark in ("/", "\\", "~")) or bool(Path(text.strip()).suffix)


def _staged(progress: ProgressCallback | None) -> ProgressCallback | None:
    """Map each stage's own 0..1 onto the whole request: init 0-5%, generating 5-90%, saving 90-100%."""
    if progress is None:
        return None
    spans = {"initializing": (0.0, 0.05), "generating": (0.05, 0.90), "saving": (0.90, 1.0), "done": (1.0, 1.0)}

    def report(event: ProgressEvent) -> None:
        low, high = spans.get(event.stage, (0.0, 1.0))
        event.fraction = low + (high - low) * event.fraction
        progress(event)

    return report


def _sub_progress(progress: ProgressCallback | None, index: int, count: int) -> ProgressCallback | None:
    if progress is None:
        return None

    def report(event: ProgressEvent) -> None:
        event.fraction = (index + event.fraction) / count
        progress(event)

    return report


def _is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` is one of SQLAlchemy's (a database failure, whatever step it came from).
    SQLAlchemy is only looked at if something already imported it: no database, no such error."""
    import sys

    sa_exc = sys.modules.get("sqlalchemy.exc")
    return sa_exc is not None and isinstance(exc, sa_exc.SQLAlchemyError)
