"""The consortium contract shared by hospital nodes and the coordinator.

Everything both sides must agree on lives here: the data dictionary (schema),
the data-independent encoding, the study plan, privacy accounting, the keys of
the messages that cross the wire, and the manifest of a released cohort.
"""

__version__ = "0.1.0"
