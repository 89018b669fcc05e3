"""Replicate: official models by name (FLUX) and version-pinned community models (SDXL).

The story of one request: build the model's input from what its catalog entry says it takes,
create a prediction (retrying rate limits and server errors ourselves, because the SDK never
retries a POST), poll it while reporting progress, cancel it on Replicate if the user cancels or
the time runs out, then download the output files with a size and time limit.

Uses the official ``replicate`` 1.x SDK. ``REPLICATE_BASE_URL`` (the SDK's own setting, without
``/v1``) points it at a proxy or a test server.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import threading
import time
from typing import Any, Callable, TypeVar

from providers.cloud import CloudProvider, Deadline, policy_within
from providers.common import nearest_aspect_ratio, scrub
from providers.retry import call_with_retry
from studio.catalog import ModelInfo
from studio.costs import CANCEL_MARGIN_SECONDS, run_limit
from studio.errors import (Cancelled, ContentBlocked, InvalidRequest, NotConfigured, ProviderFailure,
                           ProviderTimeout, QuotaExhausted, RateLimited, StudioError, UnusableResult)
from studio.imaging import flatten, png_bytes
from studio.types import Mode, PreparedRequest, ProviderImage, ProviderResult, RunContext

log = logging.getLogger("studio.providers.replicate")

T = TypeVar("T")

# The statuses Replicate documents as final. "aborted" (the prediction passed its deadline before
# it could start: nothing ran, nothing is billed) is missing from the 1.x SDK's model, which refuses
# to parse it; ``_retrying`` reads it from the SDK's validation error instead.
TERMINAL = ("succeeded", "failed", "canceled", "aborted")
# Replicate's own hosts, the only ones its token is sent to when downloading an output file
# (besides the configured endpoint): the API and the delivery CDN (https only).
CREDENTIAL_HOSTS = ("api.replicate.com", "replicate.delivery", ".replicate.delivery")
# Replicate's FLUX models spell JPEG "jpg".
REPLICATE_FORMATS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
MIB = 1024 * 1024


class ReplicateProvider(CloudProvider):
    name = "replicate"
    label = "Replicate"
    key_names = ("REPLICATE_API_TOKEN",)
    sdk_module = "replicate"
    sdk_package = "replicate"

    max_download_bytes = 50 * MIB
    download_timeout = 60.0  # seconds per output file, and never past the request's deadline
    # Small images travel inside the request as data URIs; larger ones are uploaded to /v1/files
    # first, which keeps prediction bodies small (Replicate advises data URIs only for small files).
    inline_image_limit = 256 * 1024

    def __init__(self, settings, catalog):
        super().__init__(settings, catalog)
        # ReplicateError keeps only the JSON body, so Retry-After is read by a response hook and
        # kept per thread until the error is translated.
        self._last_answer = threading.local()

    # -- the story ------------------------------------------------------------------------------

    def generate(self, request: PreparedRequest, ctx: RunContext) -> ProviderResult:
        import httpx
        from replicate.exceptions import ModelError, ReplicateError

        token = self.require_key()
        client = self._client(token)
        deadline = Deadline(ctx.timeout)
        prediction = None
        # A per-second price is bounded by the model's run limit (studio.costs.run_limit): the run is
        # cancelled when it passes it, so what the budget reserved is what it can cost.
        clock = _RunClock(run_limit(request, timeout=ctx.timeout)
                          if request.model.price.get("kind") == "per_second" else None)
        try:
            ctx.report("initializing", 0.02, message="preparing the Replicate request")
            inputs = self._build_input(request, client, ctx, deadline, token)
            ctx.check_cancelled()
            clock.not_started(time.monotonic())
            prediction = self._create(client, request.model, inputs, ctx, deadline, token)
            ctx.report("initializing", 0.1, message=f"prediction {prediction.id} {prediction.status}")
            prediction = self._wait(client, prediction, ctx, deadline, token, clock)
            if prediction.status == "failed":
                raise ModelError(prediction)
            if prediction.status == "canceled":
                raise ProviderFailure(f"the prediction {prediction.id} was canceled on Replicate", provider=self.name)
            if prediction.status == "aborted":
                # Not run and not billed, so trying again later is safe (a batch retries the item).
                raise ProviderFailure(f"Replicate aborted the prediction {prediction.id}: it passed its deadline "
                                      f"before a GPU could start it; nothing ran and nothing was billed, so it "
                                      f"can be tried again", provider=self.name, retryable=True)
            images, outputs, lost = self._download_outputs(prediction, request, ctx, deadline, token)
        except StudioError as error:
            self._cancel_unfinished(client, prediction)
            raise self._billed_run(error, request.model, prediction, clock)
        except _StatusOutsideSDK as outside:  # on create: the answer names no prediction we can follow
            raise ProviderFailure(f"Replicate answered with the prediction status {outside.status!r}, which the "
                                  f"studio does not know", provider=self.name) from None
        # ``from None``: httpx's exceptions carry the request, token header included; keep them out
        # of tracebacks and logs.
        except ModelError as error:  # it ran, and its GPU seconds are billed
            failure = self._model_error(error, token)
            failure.cost = self._cost(request.model, error.prediction.metrics or {}, 0)
            raise failure from None
        except ReplicateError as error:
            self._cancel_unfinished(client, prediction)
            raise self._billed_run(self._api_error(error, token), request.model, prediction, clock) from None
        except httpx.TimeoutException as error:
            self._cancel_unfinished(client, prediction)
            raise self._billed_run(ProviderTimeout(f"Replicate did not answer in time ({type(error).__name__})",
                                                   provider=self.name), request.model, prediction, clock) from None
        except httpx.TransportError as error:
            self._cancel_unfinished(client, prediction)
            raise self._billed_run(ProviderFailure(f"cannot reach Replicate: {type(error).__name__}: "
                                                   f"{scrub(str(error), token)}", provider=self.name, retryable=True),
                                   request.model, prediction, clock) from None

        metrics = prediction.metrics or {}
        usage = {"prediction_id": prediction.id, "predict_time": metrics.get("predict_time"),
                 "model": prediction.model, "version": prediction.version}
        if lost:
            usage["incomplete"] = f"{len(images)} of {outputs} images: {lost.message}"
        # Every output the prediction made is billed, whether or not it could be downloaded.
        return ProviderResult(images=images, cost=self._cost(request.model, metrics, outputs), usage=usage)

    # -- building the input ---------------------------------------------------------------------

    def _build_input(self, request: PreparedRequest, client, ctx: RunContext, deadline: Deadline,
                     token: str) -> dict[str, Any]:
        """The model's ``input`` object. Which fields are sent follows the catalog entry (aspect
        ratios or a size range, max images, seed, steps, guidance, strength, mask, several native
        output formats), so a new model with the same conventions is a data change; the model's
        other inputs are its catalog ``options``, passed through from ``extra``."""
        model = request.model
        inputs: dict[str, Any] = {"prompt": request.prompt}
        if model.negative_prompt and request.negative_prompt:
            inputs["negative_prompt"] = request.negative_prompt
        if model.aspect_ratios:
            inputs["aspect_ratio"] = nearest_aspect_ratio(request.width, request.height, model.aspect_ratios)
        elif model.size_range or model.sizes:
            inputs["width"], inputs["height"] = request.width, request.height
        if model.max_images > 1:
            inputs["num_outputs"] = request.n
        if model.seed and request.seed is not None:
            inputs["seed"] = request.seed
        if model.steps and request.steps is not None:
            inputs["num_inference_steps"] = request.steps
        if model.guidance and request.guidance is not None:
            inputs["guidance_scale"] = request.guidance
        if len(model.output_formats) > 1:
            # The model can answer in the wanted format itself (FLUX), which saves a lossy re-encode.
            inputs["output_format"] = REPLICATE_FORMATS[request.output_format]
            inputs["output_quality"] = request.compression

        if request.mode is not Mode.TEXT_TO_IMAGE:
            if request.init_image is None:
                raise InvalidRequest(f"{request.mode.value} needs an input image", provider=self.name)
            inputs["image"] = self._file_input(client, png_bytes(flatten(request.init_image)), "image", ctx,
                                              deadline, token)
            if model.strength and request.strength is not None:
                inputs["prompt_strength"] = request.strength
        if request.mode is Mode.INPAINT:
            if request.mask is None:
                raise InvalidRequest("inpainting needs a mask (white = repaint)", provider=self.name)
            # The studio's masks are already Replicate's convention: white is repainted.
            inputs["mask"] = self._file_input(client, png_bytes(request.mask.convert("L")), "mask", ctx, deadline,
                                             token)

        inputs.update(request.extra)  # provider options the user chose (scheduler, go_fast, ...)
        return inputs

    def _file_input(self, client, data: bytes, what: str, ctx: RunContext, deadline: Deadline, token: str) -> str:
        if len(data) <= self.inline_image_limit:
            return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        ctx.report("initializing", 0.05, message=f"uploading the {what} to Replicate")
        uploaded = self._retrying(
            lambda: client.files.create(io.BytesIO(data), filename=f"{what}.png", content_type="image/png"),
            ctx, deadline, token)
        return uploaded.urls["get"]

    # -- calling Replicate ----------------------------------------------------------------------

    def _create(self, client, model: ModelInfo, inputs: dict[str, Any], ctx: RunContext, deadline: Deadline,
                token: str):
        from replicate.identifier import ModelVersionIdentifier

        try:
            owner, name, version = ModelVersionIdentifier.parse(model.id)
        except ValueError:
            raise InvalidRequest(f"{model.id!r} is not a Replicate model: use owner/name or owner/name:version",
                                 provider=self.name) from None
        if version:  # a community model pinned to one version: POST /v1/predictions
            return self._retrying(lambda: client.predictions.create(version=version, input=inputs), ctx, deadline,
                                  token)
        # an official model, always its latest version: POST /v1/models/{owner}/{name}/predictions
        return self._retrying(lambda: client.models.predictions.create(model=(owner, name), input=inputs),
                              ctx, deadline, token)

    def _wait(self, client, prediction, ctx: RunContext, deadline: Deadline, token: str, clock: "_RunClock"):
        """Poll until the prediction ends, or until it has run past ``clock.limit`` seconds. Leaving
        by an error lets ``generate`` cancel it."""
        while prediction.status not in TERMINAL:
            running = prediction.status == "processing"
            clock.running = clock.running or running
            if running and clock.left() <= 0:
                raise ProviderTimeout(
                    f"the prediction {prediction.id} ran past the {clock.limit:g} s this model may run (the "
                    f"most its reserved cost covers); it was cancelled", provider=self.name)
            wait = min(client.poll_interval, deadline.remaining(), clock.left() if running else float("inf"))
            if ctx.cancel.wait(max(wait, 0.0)):
                raise Cancelled("cancelled by the user; the Replicate prediction is being cancelled too",
                                provider=self.name)
            if deadline.expired():
                raise ProviderTimeout(
                    f"Replicate did not finish within {ctx.timeout:g} s; the prediction was cancelled",
                    provider=self.name)
            if prediction.status == "starting":  # still not running when this poll goes out
                clock.not_started(time.monotonic())
            try:
                prediction = self._retrying(lambda: client.predictions.get(prediction.id), ctx, deadline, token)
            except _StatusOutsideSDK as outside:
                if outside.status in TERMINAL:  # "aborted": over, nothing left to cancel
                    return prediction.copy(update={"status": outside.status})
                # A status nobody documented: we cannot tell whether it runs (and bills), so stop it.
                raise ProviderFailure(f"Replicate reported the prediction {prediction.id} as {outside.status!r}, "
                                      f"a status the studio does not know; it was cancelled",
                                      provider=self.name) from None
            self._report_progress(prediction, ctx)
        return prediction

    def _report_progress(self, prediction, ctx: RunContext) -> None:
        if prediction.status == "starting":
            ctx.report("generating", 0.1, message="waiting for a Replicate GPU")
            return
        progress = prediction.progress  # parsed by the SDK from the model's progress-bar logs
        if progress is None:
            ctx.report("generating", 0.15, message=f"prediction {prediction.status}")
        else:
            ctx.report("generating", 0.15 + 0.7 * progress.percentage, step=progress.current,
                       total_steps=progress.total)

    def _cancel_unfinished(self, client, prediction) -> None:
        """Stop a prediction we are giving up on, so it does not keep running (and billing)."""
        if prediction is None or prediction.status in TERMINAL:
            return
        try:
            client.predictions.cancel(prediction.id)
        except Exception as exc:  # best effort: the error being raised already says what went wrong
            # Only the type: the message of a client error may echo the request, token included.
            log.warning("replicate: could not cancel prediction %s (%s); it may still run and bill",
                        prediction.id, type(exc).__name__)

    def _retrying(self, call: Callable[[], T], ctx: RunContext, deadline: Deadline, token: str) -> T:
        """Run an SDK call, retrying the HTTP answers that say "try again" (429, 5xx).

        Transport errors are not retried here: a POST that timed out may already have started a
        (billed) prediction, so ``generate`` reports them instead.
        """
        from replicate.exceptions import ReplicateError

        def attempt() -> T:
            try:
                return call()
            except ReplicateError as error:
                raise self._api_error(error, token) from None
            except _sdk_validation_errors() as error:
                status = _refused_status(error)
                if status is None:
                    raise ProviderFailure(f"Replicate answered with a prediction the SDK cannot read: "
                                          f"{scrub(str(error), token)[:300]}", provider=self.name) from None
                raise _StatusOutsideSDK(status) from None

        return call_with_retry(attempt, policy=policy_within(self.retry_policy, deadline), cancel=ctx.cancel,
                               window=self.retry_window)

    # -- outputs --------------------------------------------------------------------------------

    def _download_outputs(self, prediction, request: PreparedRequest, ctx: RunContext, deadline: Deadline,
                          token: str) -> tuple[list[ProviderImage], int, UnusableResult | None]:
        """The images of a succeeded prediction, how many outputs it made, and why any were lost.

        It is billed by now: an output with no image is an ``UnusableResult`` (never retried, so
        never paid twice). Outputs that download are kept even when another one cannot be; only
        when none can is the error raised."""
        output = prediction.output
        items = output if isinstance(output, list) else [output]
        # An item is a URL string, or a FileOutput (``.url``) when the caller used replicate.run.
        urls = [str(getattr(item, "url", item)) for item in items if item]
        # What the prediction's usage says it cost (GPU seconds, or the outputs it made), booked even
        # when none of them can be kept; None when it reports nothing to count (the bound is booked).
        billed = self._cost(request.model, prediction.metrics or {}, len(urls))
        if not urls:
            raise UnusableResult(f"the prediction {prediction.id} succeeded (and was billed) but its output holds "
                                 f"no image ({_shape(output)})", provider=self.name, cost=billed)
        for url in urls:
            if not url.startswith(("https://", "http://", "data:")):
                raise UnusableResult(f"Replicate returned an output that is not a file: {url[:80]!r}",
                                     provider=self.name, cost=billed)
        images, lost = [], None
        for index, url in enumerate(urls):
            ctx.report("generating", 0.85 + 0.1 * index / len(urls), message=f"downloading image {index + 1}")
            try:
                # Replicate's reference fetches output files with the API token (as its SDK's
                # FileOutput does); it goes only to Replicate's own hosts, never to a foreign one.
                data = self.download_output(url, ctx=ctx, deadline=deadline, max_bytes=self.max_download_bytes,
                                            base_url=os.environ.get("REPLICATE_BASE_URL"),
                                            timeout=self.download_timeout,
                                            credentials={"Authorization": f"Bearer {token}"},
                                            credential_hosts=CREDENTIAL_HOSTS)
            except UnusableResult as error:
                lost = lost or error
                continue
            # The outputs of one prediction share its seed: the same seed and n reproduce the set.
            images.append(ProviderImage(data=data, seed=request.seed,
                                        info={"prediction_id": prediction.id, "batch_index": index,
                                              "batch_size": len(urls)}))
        if not images:
            lost.cost = billed
            raise lost
        return images, len(urls), lost

    # -- errors and cost ------------------------------------------------------------------------

    def _api_error(self, error, token: str) -> StudioError:
        """Turn an HTTP error answer (``ReplicateError``) into the studio's typed error."""
        status = error.status or 0
        detail = scrub(error.detail or error.title or "no details", token)
        if status == 401:
            return NotConfigured("Replicate rejected the API token: check REPLICATE_API_TOKEN", provider=self.name,
                                 needs_key=True)
        if status == 402:
            return QuotaExhausted(f"the Replicate account is out of credit; add credit at "
                                  f"https://replicate.com/account/billing ({detail})", provider=self.name)
        if status == 403:
            return NotConfigured(f"this Replicate token may not run the model: {detail}", provider=self.name)
        if status == 404:
            return InvalidRequest(f"Replicate has no such model or version: {detail}", provider=self.name)
        if status in (400, 409, 413, 422):
            return InvalidRequest(f"Replicate refused the input: {detail}", provider=self.name)
        if status == 429:
            retry_after = getattr(self._last_answer, "retry_after", None)
            self._last_answer.retry_after = None
            return RateLimited(f"Replicate is throttling requests: {detail}", provider=self.name,
                               retry_after=retry_after)
        if status >= 500:
            return ProviderFailure(f"Replicate had a server error (HTTP {status}): {detail}", provider=self.name,
                                   retryable=True)
        return ProviderFailure(f"Replicate answered HTTP {status}: {detail}", provider=self.name)

    def _model_error(self, error, token: str) -> StudioError:
        """A prediction that ran and failed; the model's safety checker fails with an NSFW message."""
        text = scrub(str(error.prediction.error or "no reason given"), token)
        if "nsfw" in text.lower():
            return ContentBlocked(f"Replicate's safety checker blocked the image: {text}", provider=self.name)
        return ProviderFailure(f"the model failed on Replicate: {text}", provider=self.name)

    @staticmethod
    def _billed_run(error: StudioError, model: ModelInfo, prediction, clock: "_RunClock") -> StudioError:
        """``error``, carrying what the abandoned prediction can have been billed when it had started
        running at a per-second price: its run so far (measured from the last moment it was known
        not to be running) plus the time a cancel takes to land, at most the run limit's worth."""
        if error.cost is not None or not clock.running or model.price.get("kind") != "per_second":
            return error
        ran = clock.elapsed() if clock.limit is None else min(clock.elapsed(), clock.limit)
        seconds = ran + CANCEL_MARGIN_SECONDS
        error.cost = round(seconds * float(model.price["usd_per_second"]), 6)
        return error

    @staticmethod
    def _cost(model: ModelInfo, metrics: dict[str, Any], count: int) -> float | None:
        """USD of a finished prediction: ``count`` outputs at a per-image price, or its reported
        ``predict_time`` at a per-second one; None when it reports neither (no outputs to count, no
        run time), and the caller's bound stands."""
        price = model.price
        if price.get("kind") == "per_image" and count:
            return round(float(price["usd"]) * count, 6)
        if price.get("kind") == "per_second" and metrics.get("predict_time") is not None:
            return round(float(metrics["predict_time"]) * float(price["usd_per_second"]), 6)
        return None  # the estimate stands

    # -- the client -----------------------------------------------------------------------------

    def _client(self, token: str):
        import httpx
        import replicate

        base_url = os.environ.get("REPLICATE_BASE_URL") or None  # read by the SDK too; part of the cache key

        def make():
            client = replicate.Client(api_token=token, base_url=base_url, timeout=httpx.Timeout(30.0, connect=5.0),
                                      event_hooks={"response": [self._remember_retry_after]})
            # The SDK wraps its HTTP client in a RetryTransport that retries GETs (every poll) on
            # 429/503/504 up to 10 times, sleeping whatever Retry-After says: past our deadline and
            # deaf to a cancel. ``_retrying`` already retries those answers within the deadline, so
            # the SDK's transport makes one attempt.
            transport = getattr(client._client, "_transport", None)
            if hasattr(transport, "max_attempts"):
                transport.max_attempts = 1
            return client

        return self.cached_client((token, base_url), make)

    def _remember_retry_after(self, response) -> None:
        if response.status_code == 429:
            self._last_answer.retry_after = self.retry_after(response.headers)


class _RunClock:
    """How long a prediction can have been running (billed), seen from here: measured from the last
    moment it was known not to be running (the create, or a poll that still answered "starting"),
    so it is never less than Replicate's own ``predict_time``. ``limit``: seconds it may run
    (None: no limit but the request's deadline)."""

    def __init__(self, limit: float | None):
        self.limit = limit
        self.running = False  # whether a poll has seen it running (billed from then on)
        self._since = time.monotonic()

    def not_started(self, moment: float) -> None:
        """The prediction was not yet running at ``moment`` (``time.monotonic()``)."""
        self._since = moment

    def elapsed(self) -> float:
        return time.monotonic() - self._since

    def left(self) -> float:
        """Seconds it may still run; infinite without a limit."""
        return float("inf") if self.limit is None else self.limit - self.elapsed()


class _StatusOutsideSDK(Exception):
    """A prediction status the SDK's model refused to parse (``status`` is what Replicate sent)."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


def _sdk_validation_errors() -> tuple[type[Exception], ...]:
    """The validation error classes the SDK's models may raise (it uses pydantic's v1 API when present)."""
    import pydantic

    classes: list[type[Exception]] = [pydantic.ValidationError]
    try:
        from pydantic import v1
    except ImportError:
        return tuple(classes)
    return (*classes, v1.ValidationError)


def _refused_status(error) -> str | None:
    """The ``status`` value a validation error refused, if that is what it refused."""
    for item in error.errors():
        if tuple(item.get("loc") or ()) == ("status",):
            given = (item.get("ctx") or {}).get("given", item.get("input"))  # pydantic v1, v2
            if isinstance(given, str):
                return given
    return None


def _shape(output: Any) -> str:
    """A short description of an output without an image, for the error message."""
    if output is None:
        return "output is null"
    if isinstance(output, list):
        return f"a list of {len(output)} empty item(s)" if output else "an empty list"
    return f"output is {type(output).__name__}"
