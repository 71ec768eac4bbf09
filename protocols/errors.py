"""The user-facing error hierarchy.

Messages are written for a hospital data steward or a consortium coordinator:
they name the file, row, column, value and rule, so the CLI can print them as
one paragraph and exit non-zero without a traceback. Bugs are not wrapped in
these classes and still raise normally.
"""


class FedsynthError(Exception):
    """A problem with what a user gave us (a file, a schema, a plan, a budget)."""


class SchemaError(FedsynthError):
    """The data dictionary is malformed or contradicts itself."""


class RecordError(FedsynthError):
    """A records file does not conform to the schema."""


class PlanError(FedsynthError):
    """The study plan is invalid or incompatible with a site."""


class BudgetError(FedsynthError):
    """A study would spend more privacy budget than a site allows."""
