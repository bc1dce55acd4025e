"""XVLM Chat: the desktop program."""
