"""An HTTP emulator of the Seven Bridges v2 and Genestack ODM files APIs.

It sits beside the product, never inside it: the tests, benchmarks and ``remotefs demo`` use
it because nobody here can reach the real platforms. ``create_app`` builds the ASGI app;
``remotefs emulator`` serves it over HTTP.
"""

from remotefs.emulator.app import EmulatorApp, create_app

__all__ = ["EmulatorApp", "create_app"]
