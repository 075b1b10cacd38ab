"""Script for `mitmdump -s proxy_addons/entry.py`: the esafety add-ons, in order, as one add-on."""

from mitmproxy import hooks

from proxy_addons import build

addons = [build()]

# mitmproxy looks every event's hook name up on this module too; a miss raises and catches an
# AttributeError each time (~11 us a request, measured). None reads as "no hook" at once.
globals().update(dict.fromkeys(set(hooks.all_hooks) - set(globals())))
