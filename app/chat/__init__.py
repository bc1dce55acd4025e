"""The chat: the conversation view, the message box, the chat list and the controller between them and the model."""
