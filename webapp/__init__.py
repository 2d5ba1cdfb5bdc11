"""The Gradio app over the `posture` library: one module per tab, built from shared settings and state.

`build_app(settings)` makes the page and `launch_options(settings)` the arguments to serve it;
`app.py` reads the settings from the environment and launches. `webapp.launcher` starts the app
as a separate process (for tests, benchmarks and the screenshot script) without importing Gradio.
"""

__all__ = ["build_app", "launch_options"]


def __getattr__(name: str):
    # Lazy: `webapp.launcher` users (tests, benchmarks) should not pay for importing Gradio.
    if name in __all__:
        from webapp import blocks

        return getattr(blocks, name)
    raise AttributeError(f"module 'webapp' has no attribute {name!r}")
