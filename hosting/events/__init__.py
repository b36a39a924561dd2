"""What the box says about itself: the eventlog, notifications, alerts and email.

`eventlog` records everything; `notify` holds the rules (which events notify, which email) and the
alerts; `alerts` the periodic checks that raise and clear them; `mailer` sends the email; `oom`
watches Docker for apps killed out of memory; `history` prunes old rows past their retention.
"""

from __future__ import annotations
