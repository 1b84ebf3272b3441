"""Google Cloud naming rules shared by the Pub/Sub and BigQuery URIs.

Project ids: cloud.google.com/resource-manager/docs/creating-managing-projects — 6-30 lowercase letters, digits and
hyphens, starting with a letter, not ending with a hyphen; legacy domain-scoped ids prefix a domain and a colon
(``example.com:my-project``).
"""

from __future__ import annotations

# Written in the subset POSIX ERE, Java and Python agree on (plain groups, no escapes), so the flex template's
# parameter regexes (pipelines/options.py) use this very pattern.
PROJECT_ID = "([a-z][-a-z0-9]*([.][-a-z0-9]+)+:)?[a-z][-a-z0-9]{4,28}[a-z0-9]"
