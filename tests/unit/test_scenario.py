"""What a simulated user does (proxy/loadtest/scenario.py)."""

from __future__ import annotations

import random

import pytest

from proxy.loadtest.scenario import (
    SCREENFUL,
    gallery_links,
    image_sources,
    next_gallery,
    scroll,
)


def test_links_and_images_are_read_from_the_pages() -> None:
    index = '<a href="/gallery/1">1</a> <a href="/gallery/2">2</a> <a href="/gallery/1">again</a>'
    assert gallery_links(index) == ["/gallery/1", "/gallery/2"]
    page = '<img loading="lazy" src="/api/photo/1" alt=x><img src="/api/photo/2"><p src="/no">'
    assert image_sources(page) == ["/api/photo/1", "/api/photo/2"]


@pytest.mark.parametrize("count", [0, 1, 6, 7, 24, 25])
def test_scroll_loads_every_image_screenful_by_screenful(count: int) -> None:
    images = [f"/api/photo/{i}" for i in range(count)]
    steps = scroll(random.Random(3), images, images_per_second=4.0)
    forward = [
        s
        for s in steps
        if not set(s.urls) & set().union(*(p.urls for p in steps[: steps.index(s)]))
    ]
    loaded = [u for s in forward for u in s.urls]
    assert loaded == images  # in order, each once on the way down
    assert all(1 <= len(s.urls) <= SCREENFUL for s in steps) or count == 0


def test_a_gallery_without_images_is_read_for_a_screenful_then_left() -> None:
    (step,) = scroll(random.Random(3), [], images_per_second=4.0)
    assert step.urls == ()
    assert 0.5 * SCREENFUL / 4.0 <= step.pause <= 1.5 * SCREENFUL / 4.0


def test_scroll_pace_matches_the_rate_and_sometimes_goes_back() -> None:
    images = [f"/p/{i}" for i in range(240)]
    steps = scroll(random.Random(7), images, images_per_second=3.0)
    loads = sum(len(s.urls) for s in steps)
    pause = sum(s.pause for s in steps)
    assert 2.0 < loads / pause < 4.5  # about 3 images per second, jittered
    assert loads > len(images)  # scrolling back reloads some


def test_next_gallery_changes_event_when_it_can() -> None:
    rng = random.Random(1)
    assert all(next_gallery(rng, ["a", "b"], "a") == "b" for _ in range(20))
    assert next_gallery(rng, ["a"], "a") == "a"
    assert next_gallery(rng, ["a", "b", "c"], None) in {"a", "b", "c"}
