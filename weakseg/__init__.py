"""weakseg core library: data, models, attribution methods, refinement, metrics, export.

The core library imports no tier (cli, training, batch, serving).
"""

__version__ = "0.1.0"
