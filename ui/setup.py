"""The one setup every page calls first.

Streamlit's ``pages/`` mechanism runs a page's file directly (a visitor may open ``/Generate``
without ever passing through ``app.py``), so nothing may rely on ``app.py`` having run. Each page
therefore begins with::

    from ui.setup import setup
    ctx = setup("Generate", "✨")      # page config, who the user is, the studio, the sidebar
    ctx.studio.generate(..., user=ctx.user)

``setup`` returns a ``PageContext``:

* ``studio`` — the process-wide ``Studio`` (``st.cache_resource``), or, when this browser session
  pasted API keys, a ``Studio`` over a copy of its settings that carries those keys. Keys are kept in
  this session's memory only: never written to disk, never sent back to the browser.
* ``user`` — the owner of everything this session creates (history, boards, tasks):

  1. Streamlit's built-in login (OIDC, ``[auth]`` in secrets) when configured: ``user:<email>``;
     visitors who are not signed in see a log-in button and nothing else.
  2. ``server.trustedUserHeaders`` set (an authenticating proxy in front): ``user:<email>``.
  3. Otherwise the studio's one visitor policy (``studio.identity.visitor_policy``) decides:
     ``private`` (the default, whatever the client address) — each visitor gets a random secret, kept
     in the URL (``?visitor=``) so a refresh keeps it; the stored owner is a keyed hash of it
     (``visitor:<32 hex>``), so no stored or shown value lets anyone else in. ``local`` only when the
     operator sets ``STUDIO_VISITORS=local``: everyone is ``local`` (one person on their own
     machine; the same history as the CLI).
* ``gallery`` — this browser session's ``studio.gallery.Gallery`` (in ``st.session_state``).

Extra providers (installed plugin distributions' entry points; test fakes through
``STUDIO_PROVIDER_PLUGINS``) are read by the provider registry itself, so the CLI, Streamlit and
Gradio all see the same ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
import streamlit as st

from studio.config import SettingsError, default_home
from studio.gallery import Gallery
from studio.application import Application
from studio.application import visitor_mode as application_visitor_mode
from studio.identity import VisitorIds, new_visitor_secret, valid_visitor_secret
from studio.migrations import SchemaTooNew
from studio.service import Studio

APP_NAME = "Image Studio"
VISITOR_PARAM = "visitor"
_KEYS_STATE = "_studio_session_keys"
_KEYED_STUDIO_STATE = "_studio_with_session_keys"
_GALLERY_STATE = "_studio_gallery"
_VISITOR_STATE = "_studio_visitor"


@dataclass
class PageContext:
    studio: Studio
    user: str  # the owner id used for every studio call
    user_label: str  # what the sidebar shows
    login: str  # oidc | proxy | visitor | local
    gallery: Gallery

    def boards(self):
        from studio.boards import Boards

        return Boards(self.studio)

    @property
    def app(self) -> Application:
        """The application layer over this session's studio: every action a page takes goes through it."""
        return Application(self.studio)


# -- the studio ----------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def _shared_studio(home: str) -> Studio:
    """Once per server process: the studio, and the batch jobs a previous process left running
    resumed (interrupted single writes are finished by ``Studio`` itself)."""
    from studio.background import start_background_work

    studio = Studio(home)
    # Private visitors choose local models only from the catalog and the operator's allowlist; free
    # model paths (any file on this server) only when every visitor is the machine's own user.
    studio.settings.local_free_paths = visitor_mode() == "local"
    start_background_work(studio)  # interrupted batch jobs continue; schedules fire
    return studio


def get_studio() -> Studio:
    """The process-wide studio for $STUDIO_HOME: one index, one set of providers and loaded models.
    Stops the page with the reason when a setting cannot be used (nothing else can work then)."""
    try:
        studio = _shared_studio(str(default_home()))
        VisitorIds.for_home(studio.home)  # a bad identity key is a bad setting: said here, not as a traceback
        return studio
    except SettingsError as exc:
        st.error(f"The studio cannot start: {exc}. Fix the setting and restart the app.")
        st.stop()
        raise
    except SchemaTooNew as exc:  # a newer studio upgraded the data directory; the message says what to do
        st.error(f"The studio cannot start: {exc}")
        st.stop()
        raise


def _session_studio(shared: Studio) -> Studio:
    """The shared studio, or one that also knows the keys this session pasted."""
    keys = st.session_state.get(_KEYS_STATE) or {}
    if not keys:
        return shared
    fingerprint = hashlib.sha256(repr(sorted(keys.items())).encode()).hexdigest() + str(shared.home)
    cached = st.session_state.get(_KEYED_STUDIO_STATE)
    if cached and cached[0] == fingerprint:
        return cached[1]
    settings = dataclasses.replace(shared.settings, session_keys=dict(keys))
    keyed = Studio(settings=settings)
    st.session_state[_KEYED_STUDIO_STATE] = (fingerprint, keyed)
    return keyed


def session_keys() -> dict[str, str]:
    return dict(st.session_state.get(_KEYS_STATE) or {})


def set_session_key(name: str, value: str) -> None:
    keys = session_keys()
    if value.strip():
        keys[name] = value.strip()
    else:
        keys.pop(name, None)
    st.session_state[_KEYS_STATE] = keys


def forget_session_keys() -> None:
    st.session_state.pop(_KEYS_STATE, None)
    st.session_state.pop(_KEYED_STUDIO_STATE, None)


# -- who is this ---------------------------------------------------------------------------------


def visitor_mode() -> str:
    """``local`` or ``private``: the application layer's ``visitor_mode`` (``STUDIO_VISITORS`` from the
    environment or Streamlit secrets). Stops the page with the reason when the setting is not valid."""
    try:
        return application_visitor_mode()
    except ValueError as exc:
        st.error(str(exc))
        st.stop()
        raise


def _visitor_token() -> str:
    """This visitor's secret: from this session, else the URL, else a new one. Old-format ids (32 hex,
    embedded in images made before) are refused: they may have been read from a shared file."""
    token = st.session_state.get(_VISITOR_STATE)
    if not valid_visitor_secret(token):
        from_url = st.query_params.get(VISITOR_PARAM, "")
        token = from_url if valid_visitor_secret(from_url) else new_visitor_secret()
        st.session_state[_VISITOR_STATE] = token
    # Page switches drop query parameters; put it back so a refresh finds the same visitor.
    if st.query_params.get(VISITOR_PARAM) != token:
        st.query_params[VISITOR_PARAM] = token
    return token


def current_user() -> tuple[str, str, str]:
    """(owner id, label, login kind). Stops the page with a log-in button when login is required."""
    user = st.user
    logged_in = user.get("is_logged_in")
    if logged_in is not None:  # an [auth] section exists: Streamlit's OIDC login is configured
        if not logged_in:
            _login_gate()
        identity = str(user.get("email") or user.get("sub") or "").strip().lower()
        if not identity:
            st.error("Your sign-in did not share an email address or subject id; the studio cannot tell "
                     "whose images are whose. Ask the administrator to request the email scope.")
            st.stop()
        return f"user:{identity}", str(user.get("name") or identity), "oidc"
    if st.get_option("server.trustedUserHeaders") and user.get("email"):
        identity = str(user.get("email")).strip().lower()
        return f"user:{identity}", identity, "proxy"
    if visitor_mode() == "local":
        return "local", "local studio", "local"
    owner = VisitorIds.for_home(get_studio().home).owner_for_secret(_visitor_token())
    return owner, "private visitor", "visitor"


def _login_gate() -> None:
    st.title(APP_NAME)
    st.write("Sign in to see your images, history and mood boards.")
    st.button("Log in", type="primary", on_click=st.login)
    st.stop()


# -- the session gallery -------------------------------------------------------------------------


def session_gallery() -> Gallery:
    gallery = st.session_state.get(_GALLERY_STATE)
    if not isinstance(gallery, Gallery):
        gallery = Gallery()
        st.session_state[_GALLERY_STATE] = gallery
    return gallery


# -- the page ------------------------------------------------------------------------------------


def setup(title: str, icon: str = "🎨", *, sidebar: bool = True, layout: str = "wide") -> PageContext:
    """Configure the page, resolve the user and the studio, draw the shared sidebar.

    Call it first on every page (it may stop the page, e.g. to ask for a log-in)."""
    st.set_page_config(page_title=f"{title} · {APP_NAME}", page_icon=icon, layout=layout)
    user, label, login = current_user()
    studio = _session_studio(get_studio())
    ctx = PageContext(studio=studio, user=user, user_label=label, login=login, gallery=session_gallery())
    from ui import tasks

    tasks.sync(ctx)  # re-attach work from before a refresh; finished images join the gallery
    if sidebar:
        from ui.sidebar import render_sidebar

        render_sidebar(ctx)
    return ctx


__all__ = ["PageContext", "setup", "get_studio", "current_user", "visitor_mode", "session_gallery",
           "session_keys", "set_session_key", "forget_session_keys"]
