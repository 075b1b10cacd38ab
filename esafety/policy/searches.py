"""Search engines: which query parameter carries the search, and how each engine is forced safe."""

from __future__ import annotations

from urllib.parse import unquote_plus

from esafety.policy.model import Rewrite

# (engine, host test, path prefixes that are searches, query parameter)
_GOOGLE_PATHS = ("/search", "/webhp", "/complete/search", "/images")


def engine_of(host: str) -> str | None:
    """Which search engine a (normalised) host belongs to, if any."""
    labels = host.split(".")
    if "google" in labels[:-1] and not host.endswith(("googleapis.com", "googleusercontent.com")):
        return "google"
    if host == "bing.com" or host.endswith(".bing.com"):
        return "bing"
    if host == "duckduckgo.com" or host.endswith(".duckduckgo.com"):
        return "duckduckgo"
    if host in ("youtube.com", "www.youtube.com", "m.youtube.com", "youtubei.googleapis.com",
                "youtube.googleapis.com", "www.youtube-nocookie.com", "music.youtube.com"):
        return "youtube"
    if host.endswith("search.yahoo.com"):
        return "yahoo"
    if host.endswith("ecosia.org"):
        return "ecosia"
    if host.endswith("search.brave.com"):
        return "brave"
    if host.endswith(("startpage.com", "yandex.com", "yandex.ru", "baidu.com")):
        return "other"
    return None


_QUERY_PARAM = {"google": "q", "bing": "q", "duckduckgo": "q", "youtube": "search_query", "yahoo": "p",
                "ecosia": "q", "brave": "q", "other": "q"}


def search_query(engine: str, path: str, query: str) -> str | None:
    """The words searched for, or None if this request is not a search."""
    if not query:
        return None
    if engine == "google" and not path.startswith(_GOOGLE_PATHS):
        return None
    if engine == "youtube" and not path.startswith("/results"):
        return None
    want = _QUERY_PARAM[engine]
    # As parse_qsl reads it (names unquoted too: %71= is q=, as the engine reads it), but only the
    # value wanted is decoded.
    for pair in query.split("&"):
        k, eq, v = pair.partition("=")
        if "%" in k or "+" in k:
            k = unquote_plus(k)
        if v and (k == want or (engine == "other" and k in ("text", "wd", "query"))):
            return unquote_plus(v) if "%" in v or "+" in v else v
    return None


_GOOGLE_SAFE = Rewrite(params=(("safe", "active"),))
_BING_SAFE = Rewrite(params=(("adlt", "strict"),))
_DUCKDUCKGO_SAFE = Rewrite(params=(("kp", "1"),))
_YOUTUBE_RESTRICT = {level: Rewrite(headers=(("YouTube-Restrict", level),)) for level in ("Strict", "Moderate")}


def safe_search_rewrite(engine: str, path: str, youtube_restrict: str | None) -> Rewrite | None:
    if engine == "google" and path.startswith(_GOOGLE_PATHS):
        return _GOOGLE_SAFE
    if engine == "bing" and "search" in path:
        return _BING_SAFE
    if engine == "duckduckgo":
        return _DUCKDUCKGO_SAFE
    if engine == "youtube" and youtube_restrict:
        return _YOUTUBE_RESTRICT[youtube_restrict]  # the loader admits only these two levels
    return None
