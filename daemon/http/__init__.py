"""The HTTP front: thin handlers that parse, call the supervisor and render.

Nothing here touches os, psutil or SQL; see app.py for the factory.
"""
