"""Teaches schemathesis the admin API's `organisation-number` format (loaded by run.sh through
SCHEMATHESIS_HOOKS).

The document gives every organisation number the pattern ^[0-9]{9}$ and says that the last digit
is a MOD11 check digit, which JSON Schema cannot express. Without this, most nine-digit strings
schemathesis makes would be refused (400) for their check digit, and it would count each as a
valid request rejected. Negative cases still come from the pattern: wrong lengths, non-digits.
"""

import schemathesis
from hypothesis import strategies as st

# Brønnøysundregistrene's weights for the first eight digits (src/contract/ids.rs).
WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)
# The firm of dev's demo world, which run.sh makes known: cases with it reach the 200 answers.
DEMO_FIRM = "912345610"


def with_check_digit(first_eight: str) -> str | None:
    """The nine-digit number, or None where no check digit exists (remainder 1)."""
    check = 11 - sum(int(d) * w for d, w in zip(first_eight, WEIGHTS)) % 11
    if check == 10:
        return None
    return first_eight + str(0 if check == 11 else check)


organisation_numbers = (
    st.text(alphabet="0123456789", min_size=8, max_size=8)
    .map(with_check_digit)
    .filter(lambda number: number is not None)
)

assert with_check_digit(DEMO_FIRM[:8]) == DEMO_FIRM
schemathesis.openapi.format(
    "organisation-number", st.one_of(st.just(DEMO_FIRM), organisation_numbers)
)
