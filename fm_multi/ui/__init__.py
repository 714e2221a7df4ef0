"""The Gradio playground: a thin shell over fm_multi.Pipeline, one small builder per tab.

`build_demo(pipeline)` assembles the tabs; `fm_multi.ui.app` holds the launcher shared by
`python app.py` and `fm-multi serve`.
"""
