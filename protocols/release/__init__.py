"""A released cohort's papers: its manifest, the manifest's signature, verifying both, and
the provenance mark that keeps a cohort from being taken for real records."""
