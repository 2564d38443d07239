"""The one exception hierarchy of the project.

::

    AggregatorError
    ├── ConfigError            feeds.yaml / settings / environment is invalid
    ├── FetchError             an HTTP exchange failed
    │   ├── FetchTimeout       connect, read or total timeout
    │   ├── HTTPStatusError    the server answered with an error status
    │   ├── TooLarge           the body exceeded max_body_bytes (after decompression)
    │   ├── BlockedAddress     the address guard refused a private/loopback/... address
    │   └── TooManyRedirects   more than the allowed redirects, or a loop
    ├── ParseError             the document is not a feed we can read
    ├── ExtractError           no article text could be extracted
    └── StoreError             the database is unusable
"""

from __future__ import annotations


class AggregatorError(Exception):
    """Base of every expected failure; the message is one clear sentence."""


class ConfigError(AggregatorError):
    pass


class FetchError(AggregatorError):
    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class FetchTimeout(FetchError):
    pass


class HTTPStatusError(FetchError):
    pass


class TooLarge(FetchError):
    pass


class BlockedAddress(FetchError):
    pass


class TooManyRedirects(FetchError):
    pass


class ParseError(AggregatorError):
    pass


class ExtractError(AggregatorError):
    pass


class StoreError(AggregatorError):
    pass
