"""Celery's conventional ``celeryconfig`` module, for tools run from this checkout.

The settings themselves live in ``mobius_preview/celeryconfig.py`` and ship inside the
package (``mobius_preview.app`` loads them from there), so an installed wheel puts no
top-level ``celeryconfig`` into site-packages to collide with another application's.
"""

from mobius_preview.celeryconfig import *  # noqa: F403
