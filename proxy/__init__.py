"""sidecache: a caching reverse proxy that runs as a sidecar beside a web application.

The package is split into a pure core (``config``, ``routes``, ``keys``, ``policy``,
``flow``, ``answer``, ``ranges``, ``lru``, ``stats``, ``entry``, ``cgroup``,
``memfit``) that imports neither
aiohttp nor asyncio, and an I/O edge (``handler``, ``fill``, ``passthrough``,
``tiers``, ``store``, ``shared``, ``upstream``, ``coalesce``, ``control``,
``server``, ``cli``) that drives it. A request travels::

    client -> handler -> routes.match -> policy.decide -> tiers (lookup)
                              |                              |
                              v                              v  flow.on_lookup
                        passthrough        answer  <-  serve | revalidate | fetch
                                                               |
                                                fill -> upstream (one per key, coalesce)

"""

__version__ = "0.1.0"
