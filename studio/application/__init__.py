"""The application layer: the one set of actions every front end calls (issue 12 §1, "one rule, one place").

Streamlit pages, Gradio tabs and endpoints, the CLI and the HTTP API only map their widgets or
arguments to these calls and render what comes back:

* ``Application(studio)`` (``core``): sizes for a model, a request from form values, its estimate and
  cache key, generate / edit / variations from form values, batch concurrency bounds; with
  ``history`` (history "owner or shared" with cursors, the history CSV export, spend by day from
  ``studio.monitoring``) and ``batches`` (batch preview / run / watch, the random base seed).
* ``forms``: the one coercion of widget, form, JSON and CLI values into request fields.
* ``messages``: an error's title, message and hint, the same on every front end.
* ``frontends``: an operator setting's lookup (environment, then Streamlit secrets), the visitor
  policy, the random base seed's range.

Importing this package loads the core (``studio.service`` and its imports) but no SDK, torch or
batch machinery; ``import studio`` does not import it.
"""

from studio.application.core import BATCH_WATCH_SECONDS, CSV_MAX_ROWS, HISTORY_FILTERS, Application, HistoryPage
from studio.application.forms import (BATCH_OPTION_NAMES, NO_STYLE, OPTION_NAMES, coerce_fields, provider_options,
                                      whole_number)
from studio.application.frontends import front_end_setting, random_base_seed, visitor_mode
from studio.application.messages import ERROR_HINTS, ERROR_TITLES, KEY_HINT, ErrorText, error_text, error_title

__all__ = ["Application", "BATCH_OPTION_NAMES", "BATCH_WATCH_SECONDS", "CSV_MAX_ROWS", "ERROR_HINTS", "ERROR_TITLES",
           "ErrorText", "HISTORY_FILTERS", "HistoryPage", "KEY_HINT", "NO_STYLE", "OPTION_NAMES", "coerce_fields",
           "error_text", "error_title", "front_end_setting", "provider_options", "random_base_seed", "visitor_mode",
           "whole_number"]
