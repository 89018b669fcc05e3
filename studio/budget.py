"""Booking a request against the daily budget: reserving the most it can cost before the provider
is called, and what to book once it has finished or failed (the prices themselves are
``studio.costs``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from studio.errors import BudgetExceeded, StorageError, StudioError, UnusableResult
from studio.records import RunFacts, utc_now
from studio.storage.index import RESERVATION_TTL_SECONDS

if TYPE_CHECKING:
    from studio.storage import Storage
    from studio.types import ProviderResult

log = logging.getLogger("studio.service")  # the messages these write were the service's: same logger
# A reservation outlives its request by this much: decoding, post-processing and saving the images.
RESERVATION_SAVE_MARGIN_SECONDS = 600


def reserve(storage: Storage, run: RunFacts, daily_budget: float | None) -> str:
    """Record the request as started, before its provider is called: the most it can cost
    (``run.quote.bound``, USD) is set aside, with this process (pid, host, start time) and what its
    audit row would say, whether or not a daily budget is set. Should this process die in flight,
    the next start or ``repair`` books it as "interrupted, possibly billed" at that bound
    (``Storage.book_interrupted``). With a budget (USD a day), refuses (BudgetExceeded) a bound that
    does not fit in what is left of today's. The record is replaced by the request's audit row when
    it ends. Returns the record's id (the request id)."""
    prepared, quote = run.prepared, run.quote
    # Books what dead processes left in flight, and keeps this process's heartbeat until the caller's
    # storage.end_request (here when nothing is recorded).
    started_by = storage.start_request(run.request_id)
    try:
        accepted, committed = storage.index.reserve(
            run.request_id, utc_now().date().isoformat(), quote.bound, daily_budget if quote.bound > 0 else None,
            hold_seconds=max(RESERVATION_TTL_SECONDS, run.timeout + RESERVATION_SAVE_MARGIN_SECONDS),
            started_by=started_by,
            request={"owner": prepared.user, "provider": prepared.provider, "model": prepared.model.id,
                     "mode": run.record_mode.value, "prompt": prepared.user_prompt, "n": prepared.n,
                     "estimate": quote.estimate})
    except BaseException:
        storage.end_request(run.request_id)
        raise
    if not accepted:
        storage.end_request(run.request_id)
        raise BudgetExceeded(
            f"today's budget of ${daily_budget:.2f} would be exceeded: ${committed:.4f} is spent or running "
            f"and this request may cost up to ${quote.bound:.4f} (estimated at ${quote.estimate:.4f})")
    return run.request_id


def booked_cost(run: RunFacts, result: ProviderResult) -> float:
    """USD to book for a finished request: the provider's actual cost; when it reports none, the
    reserved bound (the most it can have cost), never less. An actual above the bound is booked as
    it is and logged: today's spend then covers it, so no later request is admitted past the budget."""
    prepared, quote = run.prepared, run.quote
    if result.cost is None:
        if quote.bound > quote.estimate:
            log.warning("%s/%s request %s: the provider reported no cost; booking the reserved $%.6f",
                        prepared.provider, prepared.model.id, run.request_id, quote.bound)
        return quote.bound
    if result.cost > quote.bound + 1e-9:
        log.warning("%s/%s request %s cost $%.6f, above the $%.6f reserved for it (estimate $%.6f)",
                    prepared.provider, prepared.model.id, run.request_id, result.cost, quote.bound, quote.estimate)
    return float(result.cost)


def billed_on_failure(run: RunFacts, error: StudioError, result: ProviderResult | None) -> float:
    """USD to book for a failed request. A provider that answered and billed without a usable
    image (UnusableResult) is booked at the cost its answer's usage reports, whether the provider
    found the answer unusable (``error.cost``) or the studio did on decoding it (``result.cost``);
    only without any reported usage at the reserved bound (the most it can have cost), so unusable
    answers still count against the budget. Any other failure is booked at the cost the provider
    attached to it (``error.cost``: a run that was billed before it was stopped), else nothing. A
    ``StorageError`` after the provider answered (the images could not be kept) is booked as the
    answer would have been (``booked_cost``)."""
    prepared = run.prepared
    if isinstance(error, StorageError) and result is not None:
        # The provider answered (and billed) but the studio could not keep the images: booked as the
        # success would have been (booked_cost: the reported cost, else the reserved bound).
        billed = booked_cost(run, result)
        log.warning("%s/%s request %s was billed but its images could not be saved; booking $%.6f",
                    prepared.provider, prepared.model.id, run.request_id, billed)
        return float(billed)
    if not isinstance(error, UnusableResult):
        if error.cost:
            log.warning("%s/%s request %s failed after it was billed; booking $%.6f",
                        prepared.provider, prepared.model.id, run.request_id, error.cost)
        return float(error.cost or 0.0)
    reported = error.cost if error.cost is not None else result.cost if result is not None else None
    billed = run.quote.bound if reported is None else reported
    log.warning("%s/%s request %s was billed without a usable image; booking $%.6f",
                prepared.provider, prepared.model.id, run.request_id, billed)
    return float(billed)
