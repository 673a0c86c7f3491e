"""Build for gpuex: the Cython matching core plus the pure-Python packages.

``pip install -e .`` builds ``matching_core._book``. Set ``GPUEX_DEBUG=1`` to compile with
bounds checking and assertions on (slower, for hunting memory errors), and ``GPUEX_ANNOTATE=1``
to write Cython's annotated HTML next to the sources. ``GPUEX_ONLY=clients._runner,...``
builds only the extensions named (a developer's rebuild of one module, leaving the others'
files alone).
"""

import compileall
import os
import py_compile
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
PACKAGES = ("matching_core", "exchange", "clients")

DEBUG = os.environ.get("GPUEX_DEBUG") == "1"
ANNOTATE = os.environ.get("GPUEX_ANNOTATE") == "1"
ONLY = {name for name in os.environ.get("GPUEX_ONLY", "").split(",") if name}

directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

extensions = [
    Extension(
        "matching_core._book",
        ["matching_core/_book.pyx"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
        define_macros=[] if DEBUG else [("NDEBUG", "1")],
    ),
    # the order-flow generator's loop (matching_core/streams.py: OrderFlow.take, its reference),
    # playing each chunk into the Cython book above
    Extension(
        "matching_core._streams",
        ["matching_core/_streams.pyx"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
        define_macros=[] if DEBUG else [("NDEBUG", "1")],
    ),
    # the event store's append loop, bound to SQLite's C API (libsqlite3, as Python's own
    # sqlite3 module uses)
    Extension(
        "exchange.store._writer",
        ["exchange/store/_writer.pyx"],
        libraries=["sqlite3"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
    ),
    # the exchange's order path (issue #20): validation, checks, fills, fees and events of
    # CompiledExchange, beside the book
    Extension(
        "exchange.kernel._kernel",
        ["exchange/kernel/_kernel.pyx"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
    ),
    # the typed rows a replay folds, read through the same SQLite C API
    Extension(
        "exchange.store._reader",
        ["exchange/store/_reader.pyx"],
        libraries=["sqlite3"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
    ),
    # the compiled fold's loop (exchange.store.fold.CompiledFold; Fold is its reference)
    Extension(
        "exchange.store._fold",
        ["exchange/store/_fold.pyx"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
    ),
    # the compact stored form of a batch (exchange/store/compact.py: compact_reference and
    # expand_reference, its twins), its loops without the GIL; below the kernel, whose lines a
    # recorded run keeps in that form (exchange.core._lines)
    Extension(
        "exchange.core._compact",
        ["exchange/core/_compact.pyx"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
    ),
    # events as their canonical lines (the encoder and the LineBatch sink), below the kernel
    Extension(
        "exchange.core._lines",
        ["exchange/core/_lines.pyx"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
    ),
    # the simulated clock's heap and loop (exchange/core/clock.py: its Python twin)
    Extension(
        "exchange.core._clock",
        ["exchange/core/_clock.pyx"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
    ),
    # the flow session's per-message driver and the run's step, inside the compiled clock
    Extension(
        "exchange.sessions._flow",
        ["exchange/sessions/_flow.pyx"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
    ),
    # a perpetual's mark at an index print (impact walk to maintenance check) and its funding:
    # the compiled engine's publish_index, mark and fund (Exchange's are their reference)
    Extension(
        "exchange.kernel._mark",
        ["exchange/kernel/_mark.pyx"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
    ),
    # the compiled engine's account view (a bot's snapshot): the account's orders from the C
    # books (Exchange.account_view is its reference)
    Extension(
        "exchange.kernel._views",
        ["exchange/kernel/_views.pyx"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
    ),
    # the per-callback budget's counter, a C trace function (clients/budget.py: its Python twin)
    Extension(
        "clients._budget",
        ["clients/_budget.pyx"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
    ),
    # the bot runner's delivery path, the compiled engine's twin (clients/runner.py: BotRunner)
    Extension(
        "clients._runner",
        ["clients/_runner.pyx"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
    ),
    # the context in-process bots act through under the compiled runner (clients/context.py:
    # Context, its reference); charges the budget through clients._budget's charge
    Extension(
        "clients._context",
        ["clients/_context.pyx"],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
    ),
]
if ONLY:
    extensions = [extension for extension in extensions if extension.name in ONLY]


class BuildInPlace(build_ext):
    """``build_ext``, and for a build in place (``pip install -e .``, ``setup.py build_ext
    --inplace``) the packages' bytecode written beside their sources, as ``pip install .``
    writes an installed package's (decision 108). A process that imports a module with no
    bytecode compiles its source, and where bytecode is not written (``PYTHONDONTWRITEBYTECODE``,
    a read-only checkout) it does so at every start: ~25 ms of each journaller's start-up,
    spent while its run records in line (measured, issue #20)."""

    def run(self):
        super().run()
        if self.inplace:
            for package in PACKAGES:
                compileall.compile_dir(
                    str(ROOT / package),
                    quiet=1,
                    invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
                )


setup(
    name="gpuex",
    version="0.1.0",
    description="Event-sourced exchange simulator for compute derivatives",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["matching_core*", "exchange*", "clients*"]),
    ext_modules=cythonize(extensions, compiler_directives=directives, annotate=ANNOTATE),
    cmdclass={"build_ext": BuildInPlace},
    install_requires=[
        "numpy>=1.26",
        "sortedcontainers>=2.4",
        "pydantic>=2.5",
        "click>=8.1",
        "sqlite-utils>=3.36",
        "orjson>=3.9",
        "tqdm>=4.66",
        "plotly>=5.20",
        "tomli-w>=1.0",
        "dask[distributed]>=2024.8",
        "websockets>=12",
    ],
    extras_require={
        "dev": [
            "pytest>=8.0",
            "hypothesis>=6.100",
            "pytest-benchmark>=4.0",
            "ruff>=0.5",
            "Cython>=3.0",
            "QuantLib>=1.30",
        ]
    },
    entry_points={
        "console_scripts": [
            "gpuex=clients.cli:main",
            "gpuex-match=matching_core.cli:main",
        ],
        # scenario kinds the exchange finds without importing the layers above it
        "gpuex.scenarios": ["market=clients.scenario"],
    },
    package_data={"clients": ["builtin/*.toml"]},
    zip_safe=False,
)
