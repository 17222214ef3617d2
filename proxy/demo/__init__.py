"""The bundled demo: a minimal reproduction of the photo gallery of the incident.

``db`` (schema, engine, pool), ``images`` (JPEG generation), ``seed`` (filling an
empty database), ``app`` (the aiohttp application, unfixed: every photo request
reads the blob from the database) and ``run`` (``sidecache upstream`` and
``sidecache demo``).
"""

DEMO_PHOTOS = 48  # photos seeded by ``sidecache demo``: two events of 24


class DatabaseURLError(ValueError):
    """A ``--db`` value the demo cannot use."""


class DatabaseUnavailable(Exception):
    """The demo's database cannot be opened or written; the message names it."""
