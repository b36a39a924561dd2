"""Backups, archives, restore and retention.

`store` is the piece the others share (rows, ids, paths, writing and reading an archive's row);
`fileformat` the archive file on disk; `appconfig` an app's config as stored with its backup.
An app backup holds the app's data directory and a dump of each of its databases (`addons/`), in one archive.
Made by `appbackup` (one app), `boxbackup` (the platform's database) and `fullbackup` (all of it);
kept or discarded by `retention`; `archives` are what is left of an uninstalled app; `restore`
brings an app back from either (restore and clone).
"""

from __future__ import annotations
