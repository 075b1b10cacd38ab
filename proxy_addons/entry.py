"""Script for `mitmdump -s proxy_addons/entry.py`: the esafety add-ons, in order."""

from proxy_addons import build

addons = build()
