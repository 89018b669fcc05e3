"""The generation service: validate → expand style → cache / budget → provider → post-process → save → record.

``Studio`` is the one object every front end uses (CLI, library, Streamlit, Gradio, batch jobs).
It owns the settings, the catalog, the styles, the storage and the provider instances.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import providers as provider_registry
from providers.base import Provider, ProviderStatus, UNAVAILABLE
from studio import costs, postprocess
from studio.catalog import Catalog
from studio.contentfilter import ContentFilter
from studio.copies import note_deleted
from studio.config import SECRET_NAMES, Settings
from studio.errors import (BudgetExceeded, ContentBlocked, InvalidRequest, NotFound, ProviderFailure, StudioError,
                           UnusableResult, missing_file)
from studio.identity import may_change, visible_to, without_embedded_owner
from studio.imaging import decode_result, load_image, png_bytes, sniff_format, thumbnail_bytes
from studio.masks import fit_to_input, kept_size
from studio.netfetch import fetch_url, is_url
from studio.options import recordable
from studio.redaction import mask_secrets
from studio.metadata import format_parameters, read_metadata
from studio.metadata_write import check_fits, encode_image, insert_metadata
from studio.metadata_read import request_fields, seed_note
from studio.storage import HistoryQuery, Page, RepairReport, Storage, this_process
from studio.storage.index import RESERVATION_TTL_SECONDS
from studio.styles import StyleBook
from studio.types import (GenerationRequest, ImageInput, ImageRecord, Mode, PreparedRequest, ProgressCallback,
                          ProgressEvent, ProviderResult, RunContext, without_private_fields)
from studio.validation import Prepared, clean_category, clean_tags, nth_seed, prepare

STUDIO_VERSION = "image-studio 0.1"
log = logging.getLogger(__name__)
# A reservation outlives its request by this much: decoding, post-processing and saving the images.
RESERVATION_SAVE_MARGIN_SECONDS = 600
# Room left, when checking that an image's texts fit its format, for what the provider adds to its record.
METADATA_HEADROOM_BYTES = 4096
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
SOURCES_PREFIX = "sources"  # file store folder of edits' input images and masks, kept for re-runs


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


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Studio:
    def __init__(self, home: str | Path | None = None, *, settings: Settings | None = None):
        self.settings = settings or Settings.load(home)
        self.home = self.settings.home
        self.home.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.home / "catalog")
        self.styles = StyleBook(self.home)
        self.content_filter = ContentFilter(self.home)
        self.storage = Storage(self.home)
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
        """Run one request. ``request_id`` (optional, unique) names the request in the audit log and on
        its images; a batch job passes its item's id so that after a crash it can find the images an
        interrupted item already saved instead of paying for them again."""
        started = time.monotonic()
        if request_id is not None and not _REQUEST_ID.fullmatch(request_id):
            raise InvalidRequest("request_id must be 1-64 letters, digits, '.', '_' or '-'")
        prepared_all = self.prepare(request)
        prepared = prepared_all.request
        tags = clean_tags(request.tags)
        category = clean_category(request.category)
        parent = self._visible_parent(request.parent_id, prepared.user)
        # The most this request can cost is reserved against the budget; the estimate is recorded beside it.
        quote = costs.quote(prepared, timeout=timeout or self.settings.request_timeout)
        estimate = quote.estimate
        request_id = request_id or secrets.token_hex(8)
        try:  # the operator's policy applies to stored results too
            self.content_filter.check(prepared.prompt)
        except ContentBlocked as error:
            self._log(request_id, prepared, prepared_all.record_mode, "failed", error=error, estimate=estimate,
                      duration=time.monotonic() - started)
            raise
        # An edit's input image and mask, as PNG: kept with its images (for re-runs) and hashed for the cache.
        sources = self._edit_sources(prepared)
        cache_key = self._cache_key(prepared, sources)
        # Nothing is paid for that cannot be kept: the texts each image will carry must fit its format.
        # An edit's result is brought back to its input's size: that is the size stored, checked here.
        keep_size = kept_size(prepared.mode, prepared.init_image, size_asked=request.width is not None)
        self._check_metadata_fits(prepared, prepared_all.record_mode, request_id, tags, category, parent,
                                  size=keep_size)
        use_cache = request.cache if request.cache is not None else (request.seed is not None and prepared.model.seed)
        if use_cache:
            hits = self.storage.index.by_cache_key(prepared.user, cache_key)
            if len(hits) >= prepared.n:
                self._log(request_id, prepared, prepared_all.record_mode, "cached", cost=0.0, estimate=estimate,
                          duration=time.monotonic() - started, cached=True)
                return GenerationResult([self.storage.with_path(r) for r in hits[:prepared.n]], 0.0, estimate,
                                        True, request_id, time.monotonic() - started, prepared_all.warnings)

        reservation = self._record_started(request_id, prepared, prepared_all.record_mode, quote,
                                           timeout or self.settings.request_timeout)
        result: ProviderResult | None = None  # what the provider answered, once it has
        ctx = RunContext(progress=_staged(progress), cancel=cancel or threading.Event(),
                         timeout=timeout or self.settings.request_timeout)
        try:
            ctx.report("initializing", 0.0, message=f"{prepared.provider} / {prepared.model.id}")
            ctx.check_cancelled()
            provider = self.provider(prepared.provider)
            result = provider.generate(prepared, ctx)
            # The provider's own warnings join the request's: returned with the result, shown by every front end.
            prepared_all.warnings.extend(w for w in result.warnings if w not in prepared_all.warnings)
            if not result.images:
                raise ProviderFailure("the provider returned no images", provider=prepared.provider)
            ctx.report("saving", 0.0, message="saving images")
            records = self._save(prepared, prepared_all.record_mode, result, quote, request_id, cache_key,
                                 tags, category, parent, started, keep_size=keep_size,
                                 notes=prepared_all.warnings, sources=sources)
        except StudioError as error:
            error.message = self.redact(error.message)
            self._log(request_id, prepared, prepared_all.record_mode, "failed", error=error, estimate=estimate,
                      cost=self._billed_on_failure(prepared, error, quote, request_id, result),
                      duration=time.monotonic() - started, reservation=reservation)
            raise
        except Exception as exc:
            error = ProviderFailure(self.redact(f"{prepared.provider} failed: {type(exc).__name__}: {exc}"),
                                    provider=prepared.provider)
            self._log(request_id, prepared, prepared_all.record_mode, "failed", error=error, estimate=estimate,
                      duration=time.monotonic() - started, reservation=reservation)
            raise error from exc
        ctx.report("done", 1.0, message=f"{len(records)} image(s) saved")
        total = sum(r.cost for r in records)
        return GenerationResult(records, total, estimate, False, request_id, time.monotonic() - started,
                                prepared_all.warnings)

    def _visible_parent(self, parent_id: str | None, user: str) -> ImageRecord | None:
        if not parent_id:
            return None
        return self.get_image(parent_id, user)

    def _cache_key(self, prepared: PreparedRequest, sources: dict[str, tuple[str, bytes]]) -> str:
        def image_hash(name: str) -> str | None:  # the PNG's sha256, as in its key (one encode per input)
            return hashlib.sha256(sources[name][1]).hexdigest() if name in sources else None

        material = {
            "provider": prepared.provider, "model": prepared.model.id, "mode": prepared.mode.value,
            "prompt": prepared.prompt, "negative": prepared.negative_prompt, "size": prepared.size,
            "n": prepared.n, "seed": prepared.seed, "steps": prepared.steps, "guidance": prepared.guidance,
            "strength": prepared.strength, "quality": prepared.quality, "format": prepared.output_format,
            "compression": prepared.compression, "extra": recordable(prepared.extra),
            "init": image_hash("source_image"), "mask": image_hash("source_mask"),
            "postprocess": prepared.postprocess,
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()

    def _record_started(self, request_id: str, prepared: PreparedRequest, record_mode: Mode,
                        quote: costs.CostQuote, timeout: float) -> str:
        """Record the request as started, before its provider is called: the most it can cost
        (``quote.bound``, USD) is set aside, with this process (pid, host, start time) and what its
        audit row would say, whether or not a daily budget is set. Should this process die in flight,
        the next start or ``repair`` books it as "interrupted, possibly billed" at that bound
        (``Storage.book_interrupted``). With a budget, refuses (BudgetExceeded) a bound that does not
        fit in what is left of today's. The record is replaced by the request's audit row when it
        ends. Returns the record's id (the request id)."""
        budget = self.settings.daily_budget
        self.storage.book_interrupted()  # a request another process left in flight counts from now
        accepted, committed = self.storage.index.reserve(
            request_id, utc_now().date().isoformat(), quote.bound, budget if quote.bound > 0 else None,
            hold_seconds=max(RESERVATION_TTL_SECONDS, timeout + RESERVATION_SAVE_MARGIN_SECONDS),
            started_by=this_process(),
            request={"owner": prepared.user, "provider": prepared.provider, "model": prepared.model.id,
                     "mode": record_mode.value, "prompt": prepared.user_prompt, "n": prepared.n,
                     "estimate": quote.estimate})
        if not accepted:
            raise BudgetExceeded(
                f"today's budget of ${budget:.2f} would be exceeded: ${committed:.4f} is spent or running "
                f"and this request may cost up to ${quote.bound:.4f} (estimated at ${quote.estimate:.4f})")
        return request_id

    def _save(self, prepared: PreparedRequest, record_mode: Mode, result: ProviderResult, quote: costs.CostQuote,
              request_id: str, cache_key: str, tags: list[str], category: str, parent: ImageRecord | None,
              started: float, *, keep_size: tuple[int, int] | None = None,
              notes: list[str] | None = None,
              sources: dict[str, tuple[str, bytes]] | None = None) -> list[ImageRecord]:
        """Decode, fit (``masks.fit_to_input``: an edit's result back to ``keep_size`` with its unmasked
        pixels the input's own), post-process and store every image of ``result``; a note about a
        provider that answered at another size is appended to ``notes``."""
        total_cost = self._booked_cost(prepared, result, quote, request_id)
        per_image = total_cost / len(result.images)
        created = utc_now()
        elapsed = time.monotonic() - started
        # The input image and mask of an edit are kept (content-addressed) so it can be re-run.
        sources = self._edit_sources(prepared) if sources is None else sources
        source_keys = {name: key for name, (key, _data) in sources.items()}
        # Decode and check every image before writing any, so one broken answer writes nothing.
        records: list[ImageRecord] = []
        encoded: list[tuple[bytes, bytes]] = []
        for index, provided in enumerate(result.images):
            decoded = decode_result(provided.data, prepared.provider)
            image = decoded
            if prepared.init_image is not None:
                image = fit_to_input(decoded, prepared.init_image, prepared.mask, keep_size)
                if keep_size is not None and _other_shape(decoded.size, keep_size) and notes is not None:
                    note = (f"{prepared.provider} answered at {decoded.size[0]}x{decoded.size[1]}, another shape than "
                            f"the input; the result was resized to the input's {keep_size[0]}x{keep_size[1]}")
                    if note not in notes:
                        notes.append(note)
            image = postprocess.apply(image, prepared.postprocess)
            seed = provided.seed if provided.seed is not None else (
                nth_seed(prepared.seed, index, self.provider(prepared.provider).seed_space)
                if prepared.seed is not None else None)
            params = self._params(prepared, provided.info, result.usage)
            params.update(source_keys)
            record = self._new_record(prepared, record_mode, image.size, seed, params, per_image, elapsed, created,
                                      tags, category, parent, request_id, cache_key)
            data = self._file_bytes(prepared, provided.data, image, record, as_provided=image is decoded)
            records.append(record)
            encoded.append((data, thumbnail_bytes(image)))
        # Say which files are about to be written, then write them, then commit their rows (which
        # clears the intent). A crash anywhere in between is finished on the next start.
        self.storage.index.add_pending(request_id, [key for r in records
                                                    for key in (self.storage.image_key(r), self.storage.thumb_key(r))],
                                       owner=prepared.user)
        for key, data in sources.values():
            if not self.storage.files.exists(key):
                self.storage.files.put(key, data)
        for record, (data, thumb) in zip(records, encoded):
            self.storage.write_image_files(record, data, thumb)
        generation = self._generation_row(request_id, prepared, record_mode, "completed", cost=total_cost,
                                          estimate=quote.estimate, duration=time.monotonic() - started)
        generation["n"] = len(records)
        self.storage.index.finish_generation(request_id, records, generation)  # replaces its started record
        return records

    @staticmethod
    def _new_record(prepared: PreparedRequest, record_mode: Mode, size: tuple[int, int], seed: int | None,
                    params: dict[str, Any], cost: float, elapsed: float, created: datetime, tags: list[str],
                    category: str, parent: ImageRecord | None, request_id: str, cache_key: str | None) -> ImageRecord:
        """The record of one image about to be saved (``size`` in pixels, ``cost`` in USD, ``elapsed`` s)."""
        return ImageRecord(
            id=secrets.token_hex(8), owner=prepared.user, path="", sha256="", width=size[0],
            height=size[1], format=prepared.output_format, size_bytes=0, provider=prepared.provider,
            model=prepared.model.id, mode=record_mode.value, prompt=prepared.prompt,
            negative_prompt=prepared.negative_prompt, style=prepared.style, params=params, seed=seed,
            category=category, tags=tags, cost=round(cost, 6), generation_time=round(elapsed, 3),
            created_at=created.isoformat(timespec="microseconds"), status="completed",
            parent_id=parent.id if parent else None, request_id=request_id, cache_key=cache_key,
            user_prompt=prepared.user_prompt,
        )

    def _check_metadata_fits(self, prepared: PreparedRequest, record_mode: Mode, request_id: str, tags: list[str],
                             category: str, parent: ImageRecord | None, *,
                             size: tuple[int, int] | None = None) -> None:
        """Refuse (InvalidRequest) a request whose images could not keep their texts in full in the
        output format (a JPEG's metadata segments hold 64 KiB), or whose size (after upscaling) the
        format cannot hold, before anything is paid for. Checked on the record the image will carry,
        with room for what the provider adds to it. ``size``: the (width, height) the images are stored
        at before upscaling when it is not the request's (an edit keeps its input's)."""
        width, height = size or (prepared.width, prepared.height)
        record = self._new_record(prepared, record_mode, (width, height), prepared.seed,
                                  self._params(prepared, {}, {}), 0.0, 0.0, utc_now(), tags, category, parent,
                                  request_id, None)
        factor = prepared.postprocess.get("upscale", 1)
        check_fits(prepared.output_format, self._parameters_text(record), embedded_json(record),
                   headroom=METADATA_HEADROOM_BYTES,
                   size=(round(width * factor), round(height * factor)))

    def _file_bytes(self, prepared: PreparedRequest, provided: bytes, image, record: ImageRecord, *,
                    as_provided: bool = True) -> bytes:
        """The file to store for one answer. When the provider answered in the requested format and no
        post-processing is asked, its own bytes with the metadata written in (lossless, about a
        millisecond); otherwise ``image`` (decoded, post-processed) encoded with it. ``as_provided`` is
        False when ``image`` is no longer the provider's picture (an edit fitted back to its input)."""
        parameters, studio_json = self._parameters_text(record), embedded_json(record)
        if as_provided and not prepared.postprocess and sniff_format(provided) == prepared.output_format:
            try:
                return insert_metadata(provided, prepared.output_format, parameters=parameters,
                                       studio_json=studio_json, size=image.size)
            except ValueError as exc:  # decodable, yet its structure is not one we write into: re-encode
                log.warning("%s answered a %s file whose metadata cannot be written in place (%s); re-encoding it",
                            prepared.provider, prepared.output_format, exc)
        return encode_image(image, prepared.output_format, parameters=parameters, studio_json=studio_json,
                            compression=prepared.compression)

    @staticmethod
    def _billed_on_failure(prepared: PreparedRequest, error: StudioError, quote: costs.CostQuote,
                           request_id: str, result: ProviderResult | None) -> float:
        """USD to book for a failed request. A provider that answered and billed without a usable
        image (UnusableResult) is booked at the cost its answer's usage reports, whether the provider
        found the answer unusable (``error.cost``) or the studio did on decoding it (``result.cost``);
        only without any reported usage at the reserved bound (the most it can have cost), so unusable
        answers still count against the budget. Any other failure is booked at the cost the provider
        attached to it (``error.cost``: a run that was billed before it was stopped), else nothing."""
        if not isinstance(error, UnusableResult):
            if error.cost:
                log.warning("%s/%s request %s failed after it was billed; booking $%.6f",
                            prepared.provider, prepared.model.id, request_id, error.cost)
            return float(error.cost or 0.0)
        reported = error.cost if error.cost is not None else result.cost if result is not None else None
        billed = quote.bound if reported is None else reported
        log.warning("%s/%s request %s was billed without a usable image; booking $%.6f",
                    prepared.provider, prepared.model.id, request_id, billed)
        return float(billed)

    @staticmethod
    def _booked_cost(prepared: PreparedRequest, result: ProviderResult, quote: costs.CostQuote,
                     request_id: str) -> float:
        """USD to book for a finished request: the provider's actual cost; when it reports none, the
        reserved bound (the most it can have cost), never less. An actual above the bound is booked as
        it is and logged: today's spend then covers it, so no later request is admitted past the budget."""
        if result.cost is None:
            if quote.bound > quote.estimate:
                log.warning("%s/%s request %s: the provider reported no cost; booking the reserved $%.6f",
                            prepared.provider, prepared.model.id, request_id, quote.bound)
            return quote.bound
        if result.cost > quote.bound + 1e-9:
            log.warning("%s/%s request %s cost $%.6f, above the $%.6f reserved for it (estimate $%.6f)",
                        prepared.provider, prepared.model.id, request_id, result.cost, quote.bound, quote.estimate)
        return float(result.cost)

    @staticmethod
    def _edit_sources(prepared: PreparedRequest) -> dict[str, tuple[str, bytes]]:
        """``{"source_image" | "source_mask": (file store key, PNG bytes)}`` for an edit's inputs (none
        for text-to-image). Keys are ``sources/<sha256>.png``: the same input is kept once."""
        kept = {}
        for name, image in (("source_image", prepared.init_image), ("source_mask", prepared.mask)):
            if image is not None:
                data = png_bytes(image)
                kept[name] = (f"{SOURCES_PREFIX}/{hashlib.sha256(data).hexdigest()}.png", data)
        return kept

    @staticmethod
    def _params(prepared: PreparedRequest, info: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
        params = {"width": prepared.width, "height": prepared.height, "n": prepared.n, "steps": prepared.steps,
                  "guidance": prepared.guidance, "strength": prepared.strength, "quality": prepared.quality,
                  "compression": prepared.compression, "extra": recordable(prepared.extra),
                  "run_mode": prepared.mode.value,
                  "postprocess": prepared.postprocess}
        if prepared.user_negative_prompt != prepared.negative_prompt:  # a style added its own part
            params["user_negative_prompt"] = prepared.user_negative_prompt
        params.update({k: v for k, v in info.items() if isinstance(v, (str, int, float, bool)) or v is None})
        if usage:
            params["usage"] = usage
        return params

    @staticmethod
    def _parameters_text(record: ImageRecord) -> str:
        params = record.params
        pairs = {
            "Steps": params.get("steps"),
            "Sampler": params.get("sampler") or record.provider,
            "CFG scale": params.get("guidance"),
            "Seed": record.seed,
            "Size": f"{record.width}x{record.height}",
            "Model": record.model,
            "Denoising strength": params.get("strength"),
            "Provider": record.provider,
            "Version": STUDIO_VERSION,
        }
        return format_parameters(record.prompt, record.negative_prompt, pairs)

    def _generation_row(self, request_id: str, prepared: PreparedRequest, record_mode: Mode, status: str, *,
                        cost: float = 0.0, estimate: float = 0.0, duration: float = 0.0,
                        error: StudioError | None = None, cached: bool = False) -> dict[str, Any]:
        now = utc_now()
        return {"id": request_id, "owner": prepared.user, "created_at": now.isoformat(timespec="microseconds"),
                "day": now.date().isoformat(), "provider": prepared.provider, "model": prepared.model.id,
                "mode": record_mode.value, "prompt": prepared.user_prompt, "n": prepared.n, "status": status,
                "error_kind": error.kind if error else None, "error": error.message if error else None,
                "cost": cost, "estimated_cost": estimate, "duration": duration, "cached": cached}

    def _log(self, request_id: str, prepared: PreparedRequest, record_mode: Mode, status: str, *,
             reservation: str | None = None, **details: Any) -> None:
        row = self._generation_row(request_id, prepared, record_mode, status, **details)
        if reservation:
            self.storage.index.finish_generation(reservation, [], row)
        else:
            self.storage.index.log_generation(row)

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
            made_with = self._made_with(init, record, user)
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

    def _made_with(self, image: Any, record: ImageRecord | None, user: str) -> GenerationRequest | None:
        """What made a variation's source: its stored record, else the generation parameters embedded
        in the file (as History reads them); None when the image carries none."""
        if record is not None:
            negative = record.params.get("user_negative_prompt")
            if negative is None:  # recorded before the user's part was kept apart from the style's
                negative = "" if record.style else record.negative_prompt
            return GenerationRequest(prompt=record.user_prompt or record.prompt, provider=record.provider,
                                     model=record.model, style=record.style, negative_prompt=negative, user=user)
        try:
            return self.request_from_image(image, user, inputs=False)  # the variation brings its own image
        except InvalidRequest:  # no parameters inside (or unreadable ones): the caller must give a prompt
            return None

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
            fields["tags"] = clean_tags(fields["tags"])
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
        return self._info_of(image)

    def _info_of(self, image: Any) -> dict[str, Any]:
        if isinstance(image, (str, Path)):
            path = Path(image)
            if not path.is_file():
                raise missing_file(path)
            image = path.read_bytes()
        if not isinstance(image, (bytes, bytearray)):
            image = png_bytes(load_image(image))
        meta = read_metadata(bytes(image))
        if isinstance(meta.get("studio"), dict):
            # Files written by earlier versions still name their owner and server paths.
            meta["studio"] = without_private_fields(meta["studio"])
        meta["seed_note"] = seed_note(meta.get("generation"))
        return meta

    def request_from_image(self, source: ImageInput | str, user: str = "local", *,
                           inputs: bool = True) -> GenerationRequest:
        """A request that re-runs an image with the same parameters, from its embedded metadata: the
        same mode, and for an edit, inpaint or image variation the same input image, mask and
        strength. Raises InvalidRequest when the image carries nothing to re-run, and when an edit's
        input is not kept any more (or was never kept, or belongs to an image this user cannot see).
        With ``inputs=False``: only the text-to-image parameters (prompt, model, seed...), for a
        caller that brings its own image or wants a fresh generation from the same settings."""
        image, record = self.resolve_image(source, user)
        meta = self._info_of(image)
        try:
            fields = request_fields(meta)
            for name in ("source_image", "source_mask"):  # read from the stored record only
                fields.pop(name, None)
            run_mode, image_id = fields.pop("run_mode", None), fields.pop("id", None)
            if not inputs:
                fields.update(mode=Mode.TEXT_TO_IMAGE, strength=None)
            elif run_mode in (Mode.IMAGE_TO_IMAGE.value, Mode.INPAINT.value):
                fields.update(self._stored_sources(fields["mode"], record, image_id, user))
            elif fields.get("mode") == Mode.VARIATION.value:
                fields["strength"] = None  # a variation of a prompt: no input image
            if fields.get("parent_id"):  # a file passed around may name a parent this user cannot see
                parent = self.storage.get(str(fields["parent_id"]))
                if parent is None or not visible_to(parent, user):
                    fields["parent_id"] = None
            return GenerationRequest(**fields, user=user)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a file can carry anything
            raise InvalidRequest(f"this image's generation parameters are unreadable "
                                 f"({type(exc).__name__}: {exc})") from exc

    def _stored_sources(self, mode: str, record: ImageRecord | None, image_id: str | None,
                        user: str) -> dict[str, Any]:
        """The kept input image (and mask) of an edit, as ``init_image`` / ``mask`` request fields.
        Only for the owner of the image, from its stored record: neither a file's metadata nor a
        shared image reads another person's inputs (sharing shows the result, not what went in)."""
        if record is None and image_id:
            record = self.storage.get(str(image_id))
        what = mode.replace("-", " ")
        if record is None or not may_change(record, user):
            raise InvalidRequest(f"this image was made by {what} from an input image the studio does not hold "
                                 f"for you; re-running it as text-to-image would make something else: "
                                 f"edit the input image again instead")
        kept: dict[str, Any] = {}
        for name, field_name in (("source_image", "init_image"), ("source_mask", "mask")):
            key = record.params.get(name)  # the record's, not the file's (a file can name anything)
            if key is None:
                if name == "source_image" or mode == Mode.INPAINT.value:
                    raise InvalidRequest(f"the input {'image' if name == 'source_image' else 'mask'} of this {what} "
                                         f"was not kept (made before inputs were); it cannot be re-run")
                continue
            if not str(key).startswith(f"{SOURCES_PREFIX}/") or not self.storage.files.exists(key):
                raise InvalidRequest(f"the input {'image' if name == 'source_image' else 'mask'} of this {what} "
                                     f"is gone; it cannot be re-run")
            kept[field_name] = self.storage.files.get(key)
        return kept

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
        self.storage.index.close()


def _other_shape(size: tuple[int, int], wanted: tuple[int, int]) -> bool:
    """True when ``size`` has another aspect ratio than ``wanted`` (more than 1 % apart): resizing it
    then stretches the picture, which is worth telling. Rounding to a model's multiple of 8 is not."""
    return abs(size[0] * wanted[1] - size[1] * wanted[0]) > 0.01 * size[1] * wanted[0]


def _looks_like_path(text: str) -> bool:
    """Whether ``text`` names a file rather than a stored image id (ids are hex, with no separators
    or extension)."""
    return any(mark in text for mark in ("/", "\\", "~")) or bool(Path(text.strip()).suffix)


def embedded_json(record: ImageRecord) -> dict[str, Any]:
    """What goes into the image's ``studio`` metadata: what anyone holding the file may know
    (``ImageRecord.public_dict``: no owner), minus file facts it cannot know about itself."""
    data = record.public_dict()
    for name in ("sha256", "size_bytes"):
        data.pop(name, None)
    return data


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
