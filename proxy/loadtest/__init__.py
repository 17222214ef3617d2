"""``sidecache loadtest``: a crowd scrolling a gallery, against any URL.

``scenario`` (what a user does next: pure), ``metrics`` (recording and
percentiles: pure), ``crowd`` (the clients doing it), ``display`` (the live
progress table), ``report`` (the final table, JSON and the HTML chart).
"""
