"""Device-maker tools for csembed: the code behind the executables in ``tools/``.

Each executable (``tools/conformance``, ``tools/provision``, ``tools/boardsim``,
``tools/board-probe``, ``tools/build-deb``) is a few lines that put this folder
on ``sys.path`` and call one module's ``main``; the modules import the
installed ``csembed`` package and nothing of the source tree besides.
"""
