"""A gradio page for a U-SAM model: upload or record audio, chat over several turns, and see how the task-aware
MoE projector routed the audio of the last answer (mean routing weight per expert, as a bar chart).

    demo = build_demo(model, processor); demo.launch(server_name="127.0.0.1")   # or: usam web MODEL_DIR

The page keeps each browser session's conversation in a gr.State (clips as arrays at the model's input rate); the
model is shared and answers one question at a time.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

# gradio must not phone home (usage analytics, version checks): set before gradio is imported
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


def _load_upload(path: str, max_seconds: float | None, rate: int):
    """An uploaded or recorded file -> a clip at `rate` (the model's input rate). libsndfile reads wav, flac, ogg
    and mp3; other containers (a browser's webm/opus or m4a recording) go through gradio's own ffmpeg-based
    reader when ffmpeg exists."""
    import shutil

    from usam.chat import load_clip
    from usam.errors import DataError

    try:
        return load_clip(path, max_seconds, rate)
    except DataError as err:
        if err.reason != "not_audio" or shutil.which("ffmpeg") is None:
            if err.reason == "not_audio":
                raise DataError("not_audio", f"{err.message}; wav, flac, ogg and mp3 are read directly, other "
                                "formats need ffmpeg installed", file=err.file, field="audio") from None
            raise
    from gradio.processing_utils import audio_from_file

    return load_clip(audio_from_file(path), max_seconds, rate)  # (rate, int16 samples)


def _empty_session() -> dict:
    return {"messages": [], "pending": [], "display": [], "usage": None}


def build_demo(model, processor, *, max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
               max_audio_seconds: float | None = None, title: str = "U-SAM"):
    import gradio as gr
    import pandas as pd

    from usam.chat import USAMChat
    from usam.errors import DataError

    lock = threading.Lock()  # one generation at a time on the shared model
    experts = [f"expert {i}" for i in range(model.config.projector.num_experts)]

    def usage_frame(usage) -> pd.DataFrame:
        weights = [0.0] * len(experts) if usage is None else [float(w) for w in usage]
        return pd.DataFrame({"expert": experts, "weight": weights})

    def chat_for(session) -> USAMChat:
        chat = USAMChat(model, processor, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                        max_audio_seconds=max_audio_seconds)
        chat.messages, chat.pending = list(session["messages"]), list(session["pending"])
        return chat

    def ask(audio_path, question, session):
        """Attach the clip (if any), stream the answer into the chat, then show the expert usage."""
        session = session or _empty_session()
        chat = chat_for(session)
        if audio_path:
            try:
                chat.pending.append(_load_upload(audio_path, max_audio_seconds, processor.sampling_rate))
            except (DataError, ValueError) as err:
                raise gr.Error(f"the audio cannot be used: {err}") from None
            session["display"].append({"role": "user", "content": f"🎵 {Path(audio_path).name}"})
            session["pending"] = list(chat.pending)
        question = (question or "").strip()
        if not question:  # a clip alone waits for the question
            yield session["display"], usage_frame(session["usage"]), session, "", None
            return
        session["display"].append({"role": "user", "content": question})
        display = session["display"] + [{"role": "assistant", "content": ""}]
        with lock:
            for piece in chat.ask(None, question, stream=True):
                display[-1] = {"role": "assistant", "content": display[-1]["content"] + piece}
                yield display, usage_frame(session["usage"]), session, "", None
            usage = chat.last_expert_usage()
        session.update(messages=chat.messages, pending=[], usage=None if usage is None else usage.tolist())
        session["display"] = display[:-1] + [{"role": "assistant", "content": chat.messages[-1]["content"]}]
        yield session["display"], usage_frame(session["usage"]), session, "", None

    def reset(_session):
        session = _empty_session()
        return [], usage_frame(None), session, "", None

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\nUpload or record a clip, ask about it, keep asking. Earlier clips and answers "
                    "stay in the conversation; **New conversation** forgets them.")
        session = gr.State(_empty_session())
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Conversation", height=420)
                question = gr.Textbox(label="Question", placeholder="What is said? What do you hear?", lines=1)
                with gr.Row():
                    send = gr.Button("Ask", variant="primary")
                    clear = gr.Button("New conversation")
            with gr.Column(scale=2):
                # format=None: the file as uploaded (gradio would convert other formats to wav with ffmpeg)
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", format=None, label="Audio clip")
                usage_plot = gr.BarPlot(usage_frame(None), x="expert", y="weight", y_lim=[0, 1], height=220,
                                        label="Expert usage of the last answer (mean routing weight)")
        outputs = [chatbot, usage_plot, session, question, audio]
        send.click(ask, [audio, question, session], outputs, api_name="ask")
        question.submit(ask, [audio, question, session], outputs, api_name=False)
        clear.click(reset, [session], outputs, api_name="reset")
    return demo


def launch(demo, host: str = "127.0.0.1", port: int | None = None, **kwargs):
    """Local only unless a host is given; never a public share link; no server-side rendering (needs node)."""
    import gradio as gr

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts fetched by the page
    return demo.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, share=False, inbrowser=False, ssr_mode=False, mcp_server=False,
        theme=theme, footer_links=["api"], **kwargs)
