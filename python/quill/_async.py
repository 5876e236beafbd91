"""Glue for asyncio: the native runtime resolves futures through this function."""

from __future__ import annotations

import asyncio
from typing import Any

from quill._quill import _log_records, _log_records_done


def _resolve(fut: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    """Set `fut`'s outcome on its loop's thread, unless it was cancelled meanwhile.

    The log records of this thread's calls are written first, here on the loop's thread
    (never on the client's I/O threads), so they are out when the awaitable completes."""
    try:
        records = _log_records()
        if records is not None:
            try:
                import logging  # imported already: records exist once a client made one

                logger = logging.getLogger("quill")
                for level, message, extra in records:
                    logger.log(level, "%s", message, extra=extra)
            finally:
                _log_records_done()
    finally:
        if not fut.done():
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)
