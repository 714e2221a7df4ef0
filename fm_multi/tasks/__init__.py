"""One module per task: batching (collate), loss, metrics inputs and post-processing.

chat and summarize share the language-model plumbing in `language.py`.
"""
