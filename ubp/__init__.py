"""ubp: Universal Behavioral Profiles.

The shared core (this package) holds what every stage agrees on: settings, table contracts, logging and the CLI.
It imports neither pyspark, torch nor feast at module import time, so DAG parsing stays cheap.
"""

__version__ = "0.1.0"
