"""History: every image you made, searchable, filterable and paged — fast at tens of thousands of
images because only one page is ever read (LIMIT/OFFSET on the index) and the grid shows thumbnails.

Per image: metadata, re-run with the same parameters, open in Generate or Edit, delete. Exports:
the filtered metadata as CSV, the current page's images as a zip. Charts: spend and generation time
per provider and day, from the audit log of every request."""

from __future__ import annotations

import base64
import math
import time

import pandas as pd
import streamlit as st

import providers as provider_registry
from studio.errors import StudioError
from studio.exports import build_zip
from studio.identity import may_change
from studio.schedules import schedule_of
from studio.types import ImageRecord, Mode
from studio.usertext import markdown_literal
from ui import tasks
from ui.setup import setup
from ui.widgets import (PERSIST, board_adder, describe, file_name, image_bytes_or_none, record_label, show_error,
                        show_outcome)

PAGE = "history"
PAGE_SIZES = (24, 48, 96)
ctx = setup("History", "🗂️")
st.title("🗂️ History")

browse, charts = st.tabs(["Browse", "Spend & timing"])


def current_filters() -> dict[str, str | None]:
    """The filter widgets' values as the application layer's history filters (blank: not filtered)."""
    text, provider, mode, tag, category, since, until = st.columns([3, 2, 2, 2, 2, 2, 2])
    chosen = provider.selectbox("Provider", ["all", *provider_registry.names()], key="hist_provider",
                                persist_state=PERSIST)
    mode_choice = mode.selectbox("Mode", ["all", *(m.value for m in Mode)], key="hist_mode", persist_state=PERSIST)
    date_from = since.date_input("From", value=None, key="hist_from", persist_state=PERSIST)
    date_to = until.date_input("To", value=None, key="hist_to", persist_state=PERSIST)
    return {
        "text": text.text_input("Search prompts or an id", key="hist_text", persist_state=PERSIST),
        "provider": None if chosen == "all" else chosen,
        "mode": None if mode_choice == "all" else mode_choice,
        "tag": tag.text_input("Tag", key="hist_tag", persist_state=PERSIST),
        "category": category.text_input("Category", key="hist_category", persist_state=PERSIST),
        "date_from": date_from.isoformat() if date_from else None,
        "date_to": date_to.isoformat() if date_to else None,
    }


def select(image_id: str) -> None:
    st.session_state["hist_selected"] = image_id


def thumbnail_url(record: ImageRecord) -> str | None:
    data = image_bytes_or_none(ctx, record, thumbnail=True)
    if data is None:
        return None
    mime = "image/webp" if (record.thumb_path or "").endswith(".webp") else f"image/{record.format}"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def details(record: ImageRecord) -> None:
    st.subheader("Details")
    image, facts = st.columns([1, 1])
    with image:
        data = image_bytes_or_none(ctx, record)
        if data is None:
            st.warning("The image file is missing (run `python -m studio repair`).")
        else:
            st.image(data, width="stretch")
            st.download_button("Download", data=data, file_name=file_name(record), key="hist_dl",
                               on_click="ignore", icon=":material/download:")
    with facts:
        st.text(record.user_prompt or record.prompt)  # user text: shown as written, never as Markdown
        st.caption(describe(record) + f" · {record.created_at[:19].replace('T', ' ')} UTC")
        if schedule_of(record.tags):  # made by a scheduled batch (studio/schedules.py)
            st.caption(f"Made by schedule {markdown_literal(schedule_of(record.tags))}")
        if record.parent_id:
            st.button(f"Parent: {record.parent_id}", key="hist_parent", on_click=select, args=(record.parent_id,))
        shown = record.public_dict()  # never the owner id: a shared image is seen by others
        with st.expander("All metadata"):
            st.json(shown)
        rerun, open_gen, open_edit = st.columns(3)
        if rerun.button("Re-run now", key="hist_rerun", icon=":material/replay:",
                        help="Same parameters and seed. If this exact request was made before, the stored images "
                             "come back at no cost."):
            try:
                request = ctx.studio.request_from_image(record.id, ctx.user)
                studio = ctx.studio
                tasks.start(ctx, PAGE, f"re-run of {record.id}",
                            lambda progress, cancel: studio.generate(request, progress=progress, cancel=cancel))
            except StudioError as error:
                show_error(error)
        if open_gen.button("Open in Generate", key="hist_open_gen", icon=":material/tune:"):
            try:
                st.session_state["gen_prefill"] = ctx.studio.request_from_image(record.id, ctx.user, inputs=False)
            except StudioError as error:
                show_error(error)
            else:
                st.switch_page("pages/1_Generate.py")
        if open_edit.button("Edit this image", key="hist_open_edit", icon=":material/brush:"):
            st.session_state["edit_prefill_source"] = record.id
            st.switch_page("pages/2_Edit.py")
        gallery_col, delete_col = st.columns(2)
        if gallery_col.button("Add to session gallery", key="hist_to_gallery", icon=":material/add_photo_alternate:"):
            ctx.gallery.add([record.id])
            st.toast("Added to the session gallery")
        with delete_col.popover("Delete", icon=":material/delete:"):
            st.write("Delete this image and its file for good?")
            if st.button("Yes, delete", key="hist_delete", type="primary", disabled=not may_change(record, ctx.user)):
                try:
                    ctx.studio.delete_image(record.id, ctx.user)
                except StudioError as error:
                    show_error(error)
                else:
                    ctx.gallery.remove(record.id)
                    st.session_state.pop("hist_selected", None)
                    st.rerun()
        with st.expander("Add to a mood board"):
            board_adder(ctx, [record.id], key="hist_board")
    task = tasks.current(ctx, PAGE)
    if task is not None:
        show_outcome(ctx, task, "hist_rerun_result")


with browse:
    filters = current_filters()
    signature = repr(sorted(filters.items()))
    if st.session_state.get("_hist_signature") != signature:  # new filters: back to the first page
        st.session_state["_hist_signature"] = signature
        st.session_state["hist_page"] = 1
    view_column, size_column, page_column, info_column = st.columns([2, 1, 1, 3])
    view = view_column.segmented_control("View", ["Grid", "Table"], default="Grid", key="hist_view",
                                         persist_state=PERSIST) or "Grid"
    size = size_column.selectbox("Per page", PAGE_SIZES, key="hist_size", persist_state=PERSIST)
    started = time.perf_counter()
    total = ctx.app.history_count(ctx.user, filters)  # the user's images and shared ones (one rule)
    pages = max(1, math.ceil(total / size))
    if st.session_state.get("hist_page", 1) > pages:
        st.session_state["hist_page"] = pages
    number = page_column.number_input("Page", 1, pages, key="hist_page")
    page = ctx.app.history(ctx.user, filters, limit=size, offset=(int(number) - 1) * size)
    elapsed = (time.perf_counter() - started) * 1000
    noun = "image" if page.total == 1 else "images"
    info_column.caption(f"{page.total:,} {noun} · page {int(number)} of {pages} · query {elapsed:.0f} ms")

    if not page.items:
        st.info("No images match." if page.total or any(filters.values())
                else "No images yet: make some on the Generate page.")
    elif view == "Table":
        frame = pd.DataFrame([{
            "preview": thumbnail_url(r), "created": r.created_at[:19].replace("T", " "),
            "prompt": r.user_prompt or r.prompt, "provider": r.provider, "model": r.model, "mode": r.mode,
            "size": f"{r.width}x{r.height}", "seed": r.seed, "cost": r.cost, "seconds": r.generation_time,
            "tags": ", ".join(r.tags), "id": r.id} for r in page.items])
        event = st.dataframe(
            frame, hide_index=True, width="stretch", key="hist_table", on_select="rerun",
            selection_mode="single-row",
            column_config={"preview": st.column_config.ImageColumn("preview", width="small"),
                           "cost": st.column_config.NumberColumn("cost", format="$%.4f"),
                           "seconds": st.column_config.NumberColumn("seconds", format="%.1f")})
        rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
        if rows:
            select(page.items[rows[0]].id)
    else:
        columns = 6
        for start in range(0, len(page.items), columns):
            row = st.columns(columns)
            for column, record in zip(row, page.items[start:start + columns]):
                with column:
                    thumb = image_bytes_or_none(ctx, record, thumbnail=True)
                    if thumb is not None:
                        st.image(thumb, width="stretch")
                    else:
                        st.caption("(file missing)")
                    st.caption(markdown_literal(record_label(record)))
                    st.button("Details", key=f"hist_pick_{record.id}", on_click=select, args=(record.id,),
                              width="stretch")

    export_csv, export_zip = st.columns(2)
    export_csv.download_button(
        f"Export metadata of all {page.total:,} matching images (CSV)", key="hist_csv", on_click="ignore",
        data=lambda f=dict(filters): ctx.app.export_history_csv(ctx.user, f), file_name="history.csv",
        mime="text/csv", disabled=not page.total, icon=":material/table:")
    export_zip.download_button(
        f"Download this page's {len(page.items)} images (zip)", key="hist_zip", on_click="ignore",
        data=lambda items=list(page.items): build_zip(items, ctx.studio.image_bytes), file_name="history-page.zip",
        mime="application/zip", disabled=not page.items, icon=":material/folder_zip:")

    selected = st.session_state.get("hist_selected")
    if selected:
        st.divider()
        try:
            details(ctx.studio.get_image(selected, ctx.user))
        except StudioError as error:
            show_error(error)
            st.session_state.pop("hist_selected", None)

with charts:
    days = st.selectbox("Period", [7, 30, 90, 365], index=1, key="hist_days", format_func=lambda d: f"last {d} days")
    # The audit log's figures as studio.monitoring computes them (the same as `studio stats`): charts only draw.
    daily = ctx.app.spend_by_day(ctx.user, days)
    if not daily:
        st.info("No requests in this period.")
    else:
        per_day = pd.DataFrame([d.to_dict() for d in daily])
        spend = per_day.pivot_table(index="day", columns="provider", values="cost", aggfunc="sum", fill_value=0.0)
        timing = per_day.dropna(subset=["mean_seconds"]).pivot_table(index="day", columns="provider",
                                                                     values="mean_seconds", aggfunc="sum")
        st.markdown("**Spend per day (USD)**")
        st.bar_chart(spend, y_label="USD")
        st.markdown("**Mean generation time per request (seconds)**")
        if timing.empty:
            st.caption("No completed requests to time yet.")
        else:
            st.line_chart(timing, y_label="seconds")
        # Per provider: monitoring's per-model figures added up (success rate over the requests that ran).
        per_model = pd.DataFrame([m.to_dict() for m in ctx.studio.stats(days, ctx.user)])
        summary = per_model.groupby("provider").agg(requests=("requests", "sum"), completed=("completed", "sum"),
                                                    failed=("failed", "sum"), images=("images", "sum"),
                                                    spend=("cost", "sum"))
        ran = summary["completed"] + summary["failed"]
        summary["success rate"] = (summary["completed"] / ran.where(ran > 0)).fillna(1.0)
        st.dataframe(summary.drop(columns="completed"), width="stretch",
                     column_config={"spend": st.column_config.NumberColumn(format="$%.4f"),
                                    "success rate": st.column_config.NumberColumn(format="percent")})
