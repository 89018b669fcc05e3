"""Streamlit-only code shared by ``app.py`` and the pages in ``pages/``.

Every page starts with::

    from ui.setup import setup
    ctx = setup("Generate", "✨")

``studio/`` never imports anything from here: the core stays usable without Streamlit.
"""
