"""Apps and their containers.

`lifecycle` (install, configure, start, stop, restart, repair, uninstall) and `update` are the app
operations; `steps` the steps they share. What they check and keep: `manifest`, `options`, `state`
(the installation-state table), `ports`, `resources`, `claims` (what a front door holds for a task),
`addons` (the mail addons' credentials), `capabilities` (the addons this server provides). What they
run: `container` (an app's container spec) on `docker_engine`.
"""

from __future__ import annotations
