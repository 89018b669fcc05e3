"""The Gradio front end's parts: who the visitor is, the endpoint logic, the controls, the tabs.

``gradio_app.py`` at the top level assembles them into one Blocks app. Nothing here imports torch or
a cloud SDK; the studio core does that lazily when a provider runs.
"""
