"""The platform's own operations (not named `platform`: that is a standard-library module).

`release` (download and verify a release), `update` (back up, then apply it), `start` (shared
services, then every app's containers), `infra` (the shared services' containers), `state` (the
platform's recorded version and infra).
"""

from __future__ import annotations
