"""What one simulated user does: open an event, lazy-load it while scrolling.

The incident's traffic: a gallery page whose ``<img loading="lazy">`` images
load a few per second as the user scrolls, sometimes back up (reloading what
scrolled out), then another event. Pure: decisions take a ``random.Random``,
and delays are returned, never slept.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

_GALLERY_LINK = re.compile(r'href="(/gallery/[0-9]+)"')
_IMG_SRC = re.compile(r'<img[^>]*\ssrc="([^"]+)"')

# A browser opens this many images at once when a screenful comes into view.
SCREENFUL = 6


def gallery_links(index_html: str) -> list[str]:
    """Gallery paths linked from the app's index page, in order, without repeats."""
    return list(dict.fromkeys(_GALLERY_LINK.findall(index_html)))


def image_sources(gallery_html: str) -> list[str]:
    return _IMG_SRC.findall(gallery_html)


@dataclass(frozen=True, slots=True)
class Fetch:
    """Load these images together, then wait ``pause`` seconds."""

    urls: tuple[str, ...]
    pause: float


def scroll(rng: random.Random, images: list[str], images_per_second: float) -> list[Fetch]:
    """The image loads of one visit to a gallery, screenful by screenful.

    Each screenful is loaded at once (as lazy loading does), then the user reads
    for as long as ``images_per_second`` allows. One time in four the user
    scrolls back a screen first, reloading images already seen. A gallery
    without images is still read for a screenful's time (one step, nothing to
    load): the user does not reload the page as fast as the target answers.
    """
    per_screen = SCREENFUL / images_per_second
    if not images:
        return [Fetch((), rng.uniform(0.5, 1.5) * per_screen)]
    steps: list[Fetch] = []
    position = 0
    while position < len(images):
        if position >= SCREENFUL and rng.random() < 0.25:
            back = images[position - SCREENFUL : position]
            steps.append(Fetch(tuple(back), rng.uniform(0.5, 1.5) * per_screen))
        screen = images[position : position + SCREENFUL]
        steps.append(Fetch(tuple(screen), rng.uniform(0.5, 1.5) * per_screen))
        position += SCREENFUL
    return steps


def next_gallery(rng: random.Random, galleries: list[str], current: str | None) -> str:
    """Another event than the one just seen, when there is one."""
    choices = [g for g in galleries if g != current] or galleries
    return rng.choice(choices)
