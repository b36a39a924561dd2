"""What the box says about itself: the eventlog, notifications, alerts and email.

`eventlog` records everything; `notify` holds the rules (which events notify, which email) and the
alerts; `alerts` the periodic checks that raise and clear them; `mailer` sends the email;
`history` prunes old rows past their retention. It imports nothing else of `hosting`: every other
package reports through it.
"""

from __future__ import annotations
