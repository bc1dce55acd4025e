"""The Xmodel-VLM model stack: loading the authors' checkpoints, chat sessions, downloads. No Qt here."""

__version__ = "0.1.0"
