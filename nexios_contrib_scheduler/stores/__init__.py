"""Persistent job stores and coordination of several workers.

``SchedulerConfig(jobstore=..., coordination=...)`` selects them; the manager builds the
backends itself. Importing this package loads no database driver: SQLAlchemy, psycopg2
and redis-py are imported only when a matching URL is used.
"""

from .fires import FireKey, current_fire

__all__ = ["FireKey", "current_fire"]
