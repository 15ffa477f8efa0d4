"""Plug-ins with websockify's interfaces: token plug-ins choose a client's target, auth plug-ins
decide whether it may connect. Built-in names load from here; a dotted path loads a user's own
class with the same signature."""
