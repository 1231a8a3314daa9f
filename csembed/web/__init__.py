"""The daemon's local web page: status and pairing in a browser.

:mod:`.http` parses requests (sans-I/O, bounded, hostile input in mind);
:mod:`.guard` decides who may ask what (Host/Origin checks, password,
CSRF token); :mod:`.app` maps routes to control commands; :mod:`.server`
is the thin asyncio layer; :mod:`.page` holds the HTML, CSS and script.
The page is a front end like the CLI: every datum it shows and every action
it takes goes through the daemon's control command handler.
"""
