"""Image Studio — the Streamlit home page. Run with ``streamlit run app.py``.

The other pages live in ``pages/`` (Streamlit's multipage directory). Every page, this one included,
starts with ``ui.setup.setup``; none imports torch, so this page opens fast.
"""

from __future__ import annotations

import streamlit as st

from studio.estimates import budget_today
from studio.usertext import markdown_literal
from ui.setup import setup
from ui.sidebar import gallery_panel
from ui.widgets import STATE_ICONS, STATE_WORDS, describe, image_bytes_or_none, provider_statuses

ctx = setup("Home", "🎨")

st.title("🎨 Image Studio")
st.write(
    "Write a prompt, pick a provider, get images that are saved with their full metadata, searchable, "
    "downloadable and collectable on mood boards. **Generate** makes images from text, **Edit** changes "
    "an image (image-to-image or inpainting with a mask you draw), **Variations** makes several takes on "
    "an image or a prompt, **Batch** illustrates a whole script, **History** finds everything you made, "
    "**Mood boards** collect and export.")

for alert in ctx.studio.alerts():
    (st.error if alert.level == "error" else st.warning)(alert.message, icon="⚠️")

st.subheader("Providers")
rows = []
for status in provider_statuses(ctx).values():
    rows.append({"": STATE_ICONS.get(status.state, ""), "provider": status.label,
                 "status": STATE_WORDS.get(status.state, status.state),
                 "how to set it up": status.reason or "—", "models": len(status.models)})
st.dataframe(rows, hide_index=True, width="stretch")

left, right = st.columns(2)
today = budget_today(ctx.studio)  # the one rule for what is left (a budget of 0 leaves nothing)
left.metric("Spent today (whole studio)", f"${today.spent:.2f}",
            help="Costs recorded today (UTC) by every request, across providers.")
if today.budget is not None:
    right.metric("Daily budget left", f"${today.left:.2f}", help=f"STUDIO_DAILY_BUDGET = ${today.budget:.2f}")
    right.progress(today.used)
else:
    right.metric("Daily budget", "none", help="Set STUDIO_DAILY_BUDGET (USD) to cap spending per day.")

st.subheader("Recent images")
recent = ctx.studio.history(owner=ctx.user, limit=8).items
if not recent:
    st.info("Nothing yet — open **Generate** in the sidebar and make your first image.")
else:
    columns = st.columns(4)
    for index, record in enumerate(recent):
        with columns[index % 4]:
            thumb = image_bytes_or_none(ctx, record, thumbnail=True)
            if thumb:
                st.image(thumb, width="stretch")
            st.caption(f"{markdown_literal((record.user_prompt or record.prompt)[:60])} · {describe(record)}")

st.subheader("This session's gallery")
gallery_panel(ctx, key="home", columns=6)
