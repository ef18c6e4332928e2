"""An exception and the chain of errors under it (`raise ... from`, or raised while handling), which is
where a transport error keeps what the operating system or TLS said; a chain may loop, and is read once."""

from __future__ import annotations

from collections.abc import Iterator


def causes(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
