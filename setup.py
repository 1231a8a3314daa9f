"""Build hook: setuptools needs setup.py to run cffi's ``cffi_modules``.

The C extension is optional at install time: if no compiler is present the
package still installs and falls back (loudly) to the pure-Python backend.
"""

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the native extension, but never fail the install because of it."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means "no native"
            print(f"WARNING: csembed native extension not built ({exc}); "
                  "the pure-Python backend will be used")

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"WARNING: csembed native extension {ext.name} not built ({exc}); "
                  "the pure-Python backend will be used")


setup(
    # The repository's top-level boards/ folder ships as the data package
    # csembed.boards, so installed copies find their profiles.
    packages=find_packages(include=["csembed", "csembed.*"]) + ["csembed.boards"],
    package_dir={"csembed.boards": "boards"},
    package_data={"csembed": ["py.typed"], "csembed.boards": ["*.toml"]},
    cffi_modules=["native/build_native.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
