"""Presentation: terminal tables, the HTML/Markdown report, figures and sweep reports; all read ``vaebench.schema``."""
