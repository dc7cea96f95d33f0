"""The page's theme: fonts that ship with the app, so the page looks the same offline.

Gradio's stock theme fetches nothing from the internet either, but it declares only the 400 and
600 weights of its font: the headings (bold) then fall back to whatever the system has, which
mixes glyphs of two families. IBM Plex Sans ships with Gradio in every weight used here and is
served by this server (``static/fonts``); the system stack follows as the last resort.
"""

from __future__ import annotations

import gradio as gr

#: The weights the page uses: text, labels and buttons, headings.
WEIGHTS = (400, 600, 700)

THEME = gr.themes.Default(
    font=(gr.themes.LocalFont("IBM Plex Sans", weights=WEIGHTS), "ui-sans-serif", "system-ui",
          "sans-serif"),
    font_mono=(gr.themes.LocalFont("IBM Plex Mono", weights=(400, 600)), "ui-monospace",
               "monospace"),
)  # fmt: skip
