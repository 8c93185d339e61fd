"""Build of the one compiled part: ``auditor.packets._scan``, the capture record walk.

Everything else is in pyproject.toml. The extension is optional: without a C compiler the
install goes on and the capture reader uses its pure-Python walk (slower, same results).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "auditor.packets._scan",
            sources=["auditor/packets/_scan.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
