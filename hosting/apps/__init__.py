"""Apps and their containers.

`lifecycle` (install, configure, start, stop, restart, repair, uninstall) and `update` are the app
operations; `steps` the steps they share. What they check and keep: `manifest`, `options`, `state`
(the installation-state table), `ports`, `resources`, `claims` (what a front door holds for a task),
`addons` (the mail addons' credentials), `databases` (the mysql and postgresql addons), `capabilities`
(the addons this server provides). What they run: `container` (an app's container spec) on
`docker_engine`; `oom` watches that engine for app containers killed out of memory.

Two operations reach into `hosting.backups`: `update` backs the app up first, and `uninstall` keeps
its last backup as an archive; `backups` in turn restores through the shared `steps`. Module by
module the imports have no cycle.
"""

from __future__ import annotations
