"""The window: it lays out the chat, the model's status and the Settings dialog; the start-up wires them."""
