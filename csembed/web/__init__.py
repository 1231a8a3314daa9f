"""The daemon's local web page: status and pairing in a browser.

:mod:`.http` parses requests (sans-I/O, bounded, hostile input in mind);
:mod:`.guard` decides who may ask what (Host/Origin checks, password,
CSRF token); :mod:`.app` maps routes to control commands; :mod:`.page`
holds the HTML, CSS and script. All of it is sans-I/O; the thin asyncio
layer is :mod:`csembed.runtime.web_server`, which the daemon starts.
The page is a front end like the CLI: every datum it shows and every action
it takes goes through the daemon's control command handler.
"""
