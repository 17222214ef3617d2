"""sidecache: a caching reverse proxy that runs as a sidecar beside a web application.

The package is split into a pure core (``config``, ``routes``, ``keys``, ``policy``,
``lru``, ``stats``, ``entry``) that imports neither aiohttp nor asyncio, and an I/O
edge (``store``, ``upstream``, ``coalesce``, ``handler``, ``control``, ``server``,
``cli``) that drives it. A request travels::

    client -> handler -> routes.match -> policy.decide -> store.lookup
                              |                               | miss
                              v                               v
                        pass-through  <-  upstream  <-  coalesce (one fill per key)

"""

__version__ = "0.1.0"
