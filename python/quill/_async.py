"""Glue for asyncio: the native runtime resolves futures through this function."""

from __future__ import annotations

import asyncio
from typing import Any


def _resolve(fut: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    """Set `fut`'s outcome on its loop's thread, unless it was cancelled meanwhile."""
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)
