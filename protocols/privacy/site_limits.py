"""The sizes of site the guarantee is stated for, public and the same for every study.

A site's record count never decides anything that leaves its node: these bounds
are checked where the records enter (`fedsynth-node check` and `start`, and the
simulation harness, all on the operator's side), so a coordinator never learns
from a node's answers on which side of them a site lies.

- `MAX_SITE_RECORDS` bounds the domain of the guarantee: a records file with
  more rows is refused at validation, and every plan's δ must lie below
  1 / `MAX_SITE_RECORDS`, so δ < 1/n holds at every site without a look at n (a
  mechanism that fails with probability δ ≥ 1/n could amount to releasing a
  whole record). fedsynth is for rare-disease cohorts: tens to hundreds of
  patients per hospital.
- `MIN_SITE_RECORDS`: below it one patient is so large a share of a site, and
  the noise so large against its signal, that the operator is told to wait for
  more records before joining (a utility rule: the guarantee holds for any n).
"""

MIN_SITE_RECORDS = 20
MAX_SITE_RECORDS = 50_000
