"""User-facing errors: raised for bad input, printed as one paragraph without a traceback."""


class LrlabError(Exception):
    """A problem the user can fix (bad config value, missing data, unavailable weights)."""


class ConfigError(LrlabError):
    """The composed configuration has a bad key, type or value."""
