"""What makes the stated ε true: accounting, exact noise, the ledger format, SecAgg+ ranges,
and the public limits on a site's size."""
